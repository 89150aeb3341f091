"""The workflow primitives: ``chain`` (one after the other), ``group`` (in parallel) and ``chord``
(a group, then a body given the group's results)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import router

from django_tq import serialization
from django_tq.canvas.signatures import (
    PLACEMENT,
    Placement,
    Signature,
    kind,
    links_of,
    new_id,
    signature,
)
from django_tq.conf import tq_settings
from django_tq.context import current_request
from django_tq.models import ChordCounter, GroupResult
from django_tq.result import GroupResult as GroupResultHandle


def _flatten(tasks: Iterable[Any], kind: type[Signature]) -> list[Signature]:
    found: list[Signature] = []
    for item in tasks:
        if isinstance(item, Iterable) and not isinstance(item, Signature | str | dict):
            found.extend(_flatten(item, kind))
        elif isinstance(item, kind):
            found.extend(item.tasks)  # type: ignore[attr-defined]
        else:
            found.append(signature(item))
    return found


@kind
class chain(Signature):
    """Tasks run one after the other, each given the previous one's result: ``a.s() | b.s()``."""

    kind = "chain"

    def __init__(self, *tasks: Any, **options: Any) -> None:
        steps = _flatten(tasks, chain)
        # A group followed by another step is a chord (as in Celery): the step gets the results.
        upgraded: list[Signature] = []
        for step in steps:
            if upgraded and isinstance(upgraded[-1], group):
                upgraded[-1] = chord(upgraded[-1], step)
            else:
                upgraded.append(step)
        super().__init__("django_tq.chain", **options)
        self.tasks = tuple(upgraded)

    def __repr__(self) -> str:
        return " | ".join(repr(step) for step in self.tasks)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        steps = [signature(step) for step in data["tasks"]]
        return cls(*steps)._copy(options=dict(data.get("options") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "chain",
            "tasks": [step.to_dict() for step in self.tasks],
            "options": self.options,
        }

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        if not self.tasks:
            return self._copy(options={**self.options, **options})
        first = self.tasks[0].clone(args, kwargs)
        return self._copy(tasks=(first, *self.tasks[1:]), options={**self.options, **options})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply(args, kwargs).get()

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        previous, arguments = None, tuple(args or ())
        for index, step in enumerate(self._distributed(options)):
            result = attach(step.apply(arguments, kwargs if index == 0 else None), previous)
            previous, arguments = result, (result.get(),)
        return previous

    def _distributed(self, options: dict[str, Any]) -> list[Signature]:
        """Return the steps with the chain's options: ``link`` on the last step, ``link_error``
        on every step, ``task_id`` on the last, the others on the first (as in Celery)."""
        options = {**self.options, **options}
        errbacks = links_of(options.pop("link_error", None))
        links = links_of(options.pop("link", None))
        task_id = options.pop("task_id", None)
        steps = list(self.tasks)
        if errbacks:
            steps = [
                s.set(link_error=[*links_of(s.options.get("link_error")), *errbacks]) for s in steps
            ]
        if links:
            steps[-1] = steps[-1].set(link=[*links_of(steps[-1].options.get("link")), *links])
        if task_id:
            steps[-1] = steps[-1].set(task_id=task_id)
        if options:
            steps[0] = steps[0].set(**options)
        return steps

    def freeze(self) -> Any:
        return self._copy(tasks=tuple(s.freeze() for s in self._distributed({})), options={})

    @property
    def id(self) -> str:
        return self.tasks[-1].id

    def first_id(self) -> str:
        return self.tasks[0].first_id()

    def task_ids(self) -> list[str]:
        return [i for step in self.tasks for i in step.task_ids()]

    def check(self) -> None:
        if not self.tasks:
            raise ValueError("A chain needs at least one task.")
        for step in self.tasks:
            step.check()

    def send(self, args: tuple[Any, ...], kwargs: dict[str, Any], place: Placement) -> None:
        first, *rest = self.tasks
        tail = tuple(step.to_dict() for step in rest) + place.chain
        first.send(args, kwargs, Placement(**{**_fields(place), "chain": tail}))

    def result(self) -> Any:
        previous = None
        for step in self.tasks:
            previous = attach(step.result(), previous)
        return previous


def attach(handle: Any, previous: Any) -> Any:
    """Make ``previous`` the parent of the first result in ``handle``'s parent chain; return it."""
    if previous is not None:
        node = handle
        while node._parent is not None and node._parent is not previous:  # in memory, no I/O
            node = node._parent
        node.parent = previous
    return handle


def _fields(place: Placement) -> dict[str, Any]:
    return {key: getattr(place, key) for key in (*PLACEMENT, "extra")}


@kind
class group(Signature):
    """Tasks run in parallel; the result is a :class:`~django_tq.result.GroupResult`."""

    kind = "group"

    def __init__(self, *tasks: Any, **options: Any) -> None:
        super().__init__("django_tq.group", **options)
        self.tasks = tuple(_flatten(tasks, group))

    def __repr__(self) -> str:
        return f"group({', '.join(repr(t) for t in self.tasks)})"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        members = [signature(member) for member in data["tasks"]]
        return cls(*members)._copy(options=dict(data.get("options") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "group",
            "tasks": [t.to_dict() for t in self.tasks],
            "options": self.options,
        }

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        members = tuple(t.clone(args, kwargs) for t in self.tasks)
        return self._copy(tasks=members, options={**self.options, **options})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply(args, kwargs).join()

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        frozen = self.set(**options).freeze()
        results = [t.apply(args, kwargs) for t in frozen.tasks]
        return GroupResultHandle(frozen.id, results)

    def freeze(self) -> Any:
        options = dict(self.options)
        group_id = options.pop("group_id", None) or options.pop("task_id", None) or new_id()
        members = tuple(t.set(**options).freeze() for t in self.tasks)
        return self._copy(tasks=members, options={"group_id": group_id})

    @property
    def id(self) -> str:
        return str(self.options["group_id"])

    def first_id(self) -> str:
        return self.tasks[0].first_id() if self.tasks else self.id

    def task_ids(self) -> list[str]:
        return [i for t in self.tasks for i in t.task_ids()]

    def check(self) -> None:
        for member in self.tasks:
            member.check()

    def send(self, args: tuple[Any, ...], kwargs: dict[str, Any], place: Placement) -> None:
        if place.chain or place.chord:
            # Steps follow the group, or it ends a chord's header task: wait for it with a chord.
            rest = [signature(entry) for entry in place.chain]
            # Without further steps the group's list of results is the result of its id.
            body = chain(*rest) if rest else Signature("django_tq.accumulate", task_id=self.id)
            waiting = chord(self, body).freeze()
            waiting.check()
            waiting.send(args, kwargs, Placement(**{**_fields(place), "chain": ()}))
            return
        parent = place.parent_id or _current_id()
        save_group(self, parent_id=parent, root_id=place.root_id, owner=place.extra.get("owner"))
        inner = Placement(**{**_fields(place), "group_id": self.id, "parent_id": parent})
        for member in self.tasks:
            member.send(args, kwargs, inner)

    def result(self) -> GroupResultHandle:
        return GroupResultHandle(self.id, [t.result() for t in self.tasks])


def _current_id() -> str | None:
    request = current_request.get()
    return request.id if request else None


def save_group(
    frozen: group,
    *,
    parent_id: str | None,
    root_id: str | None,
    owner: Any = None,
    chord: bool = False,
) -> None:
    """Record the group's members (a ``GroupResult`` row), in the caller's transaction."""
    alias = router.db_for_write(GroupResult) or "default"
    GroupResult.objects.using(alias).bulk_create(
        [
            GroupResult(
                group_id=frozen.id,
                result_ids=[member.id for member in frozen.tasks],
                parent_id=parent_id,
                root_id=root_id,
                owner_id=getattr(owner, "pk", owner),
                is_chord=chord,
            )
        ],
        ignore_conflicts=True,
    )


@kind
class chord(Signature):
    """A group whose results, in order, are given to a body once all finished: ``chord(h)(b)``."""

    kind = "chord"

    def __init__(self, header: Any, body: Any = None, **options: Any) -> None:
        super().__init__("django_tq.chord", **options)
        self.header = header if isinstance(header, group) else group(header)
        self.body = signature(body) if body is not None else None

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        body = signature(data["body"]) if data.get("body") else None
        return cls(signature(data["header"]), body)._copy(options=dict(data.get("options") or {}))

    def __call__(self, body: Any = None, **options: Any) -> Any:
        """``chord(header)(body)``: apply with this body; return the body's result handle."""
        return self._copy(body=signature(body) if body is not None else self.body).apply_async(
            **options
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "chord",
            "header": self.header.to_dict(),
            "body": self.body.to_dict() if self.body else None,
            "options": self.options,
        }

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        return self._copy(
            header=self.header.clone(args, kwargs), options={**self.options, **options}
        )

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        body = self._body()
        header = self.header.apply(args, kwargs)
        return attach(body.clone(**options).apply((header.join(),)), header)

    def _body(self) -> Signature:
        if self.body is None:
            raise ValueError("A chord needs a body: chord(header)(body) or chord(header, body).")
        return self.body

    def freeze(self) -> Any:
        options = dict(self.options)
        errbacks = links_of(options.pop("link_error", None))
        links = links_of(options.pop("link", None))
        body = self._body().set(**{k: v for k, v in options.items() if k == "task_id"})
        if errbacks:
            body = body.set(link_error=[*links_of(body.options.get("link_error")), *errbacks])
        if links:
            body = body.set(link=[*links_of(body.options.get("link")), *links])
        header_options = {k: v for k, v in options.items() if k != "task_id"}
        header = self.header.set(**header_options, ignore_result=False).freeze()
        return self._copy(header=header, body=body.freeze(), options={})

    @property
    def id(self) -> str:
        return self._body().id

    def first_id(self) -> str:
        return self.header.first_id() if self.header.tasks else self._body().first_id()

    def task_ids(self) -> list[str]:
        return [*self.header.task_ids(), *self._body().task_ids()]

    def check(self) -> None:
        if tq_settings.RESULT_BACKEND != "django-db":
            raise ImproperlyConfigured(
                "Chords need TQ['RESULT_BACKEND'] = 'django-db': the header tasks' results are "
                "stored and counted in the database, in one transaction, so the body runs once."
            )
        self._body().check()
        self.header.check()

    def send(self, args: tuple[Any, ...], kwargs: dict[str, Any], place: Placement) -> None:
        body = self._body()
        later = {"group_id": place.group_id, "chord": place.chord, "chain": list(place.chain)}
        if not self.header.tasks:  # nothing to wait for: the body runs at once, with []
            body.send(([],), {}, Placement(**{**_fields(place), "parent_id": place.parent_id}))
            return
        alias = router.db_for_write(ChordCounter) or "default"
        ChordCounter.objects.using(alias).bulk_create(
            [
                ChordCounter(
                    group_id=self.header.id,
                    remaining=len(self.header.tasks),
                    total=len(self.header.tasks),
                    result_ids=[member.id for member in self.header.tasks],
                    body=serialization.to_jsonable({**body.to_dict(), "placement": later}),
                )
            ],
            ignore_conflicts=True,
        )
        parent = place.parent_id or _current_id()
        save_group(
            self.header,
            parent_id=parent,
            root_id=place.root_id,
            owner=place.extra.get("owner"),
            chord=True,
        )
        header = Placement(
            parent_id=parent, root_id=place.root_id, group_id=self.header.id, chord=self.header.id
        )
        for member in self.header.tasks:
            member.send(args, kwargs, header)

    def result(self) -> Any:
        return attach(self._body().result(), self.header.result())
