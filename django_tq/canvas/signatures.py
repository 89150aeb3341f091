"""``Signature``: one task call written down, and :func:`signature` to build one (or read a dict).

Signatures sit below ``tasks.py``: ``Task.s()`` builds one, and a signature reaches its task by
name through the registry (:meth:`~django_tq.registry.TaskRegistry.sender`). The kinds built on
``Signature`` (``chain``, ``group``, ``chord`` in :mod:`django_tq.canvas.primitives`) add
themselves to :data:`KINDS` with :func:`kind`, so a dict of any kind reads back here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from django_tq import off_loop
from django_tq.conf import tq_settings
from django_tq.context import current_request
from django_tq.publishers import Publisher
from django_tq.registry import registry
from django_tq.result import AsyncResult

if TYPE_CHECKING:
    from django_tq.canvas.primitives import chain
    from django_tq.tasks import Task

S = TypeVar("S", bound="type[Signature]")

PLACEMENT = ("parent_id", "root_id", "group_id", "chord", "chain")
#: call options that apply to every task of a workflow
WORKFLOW_WIDE = ("owner", "using", "publish_on_commit", "publisher")


@dataclass(frozen=True, kw_only=True, slots=True)
class Placement:
    """Where an applied signature sits in its workflow."""

    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    chord: str | None = None  #: the chord whose counter the last task here decrements
    chain: tuple[dict[str, Any], ...] = ()  #: the steps that follow, as signature dicts
    extra: dict[str, Any] = field(default_factory=dict)  #: call options (owner, using, …)

    def options(self) -> dict[str, Any]:
        """Return the placement as ``apply_async`` options (unset ones left out)."""
        values = {key: getattr(self, key) for key in PLACEMENT}
        return {**self.extra, **{key: value for key, value in values.items() if value}}


def new_id() -> str:
    return str(uuid.uuid4())


def task_of(name: str) -> Task[Any, Any]:
    """Return the task registered as ``name``, or a stand-in that can only be sent."""
    return registry.sender(name)  # a stand-in: registered on the workers only (send_task)


def links_of(value: Any) -> list[dict[str, Any]]:
    """Return ``link``/``link_error`` option values (a signature, dict or list) as dicts."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [signature(item).to_dict() for item in items]


class Signature:
    """One task call, written down: ``add.s(2, 2)``, ``signature("app.add", (2, 2))``."""

    kind = "task"

    def __init__(
        self,
        task: str | Task[Any, Any],
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        immutable: bool = False,
        **options: Any,
    ) -> None:
        self.task = task if isinstance(task, str) else task.name
        self.args = tuple(args or ())
        self.kwargs = dict(kwargs or {})
        self.immutable = immutable
        self.options = options

    def __repr__(self) -> str:
        arguments = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}{'!' if self.immutable else ''}({', '.join(arguments)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self))

    # -- copies ---------------------------------------------------------------------------------
    def _copy(self, **changes: Any) -> Any:
        copy = object.__new__(type(self))
        copy.__dict__.update({**self.__dict__, **changes})
        return copy

    def clone(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Return a copy with ``args`` prepended, ``kwargs`` merged and ``options`` set (a partial).

        An immutable signature keeps its own arguments.
        """
        if self.immutable:
            return self._copy(options={**self.options, **options})
        return self._copy(
            args=(*(args or ()), *self.args),
            kwargs={**self.kwargs, **(kwargs or {})},
            options={**self.options, **options},
        )

    def set(self, *, immutable: bool | None = None, **options: Any) -> Any:
        """Return a copy with these call options (``queue``, ``countdown``, ``priority``, …)."""
        copy = self._copy(options={**self.options, **options})
        if immutable is not None:
            copy.immutable = immutable
        return copy

    def set_immutable(self, immutable: bool) -> Any:
        """Return a copy that ignores (True) or takes (False) the result of a previous step."""
        return self.set(immutable=immutable)

    def link(self, callback: Signature) -> Any:
        """Return a copy that applies ``callback`` with this task's return value on success."""
        return self.set(link=[*links_of(self.options.get("link")), callback.to_dict()])

    def on_error(self, errback: Signature) -> Any:
        """Return a copy that calls ``errback`` when this task fails (see docs/canvas.md)."""
        return self.set(link_error=[*links_of(self.options.get("link_error")), errback.to_dict()])

    link_error = on_error

    def __or__(self, other: Signature) -> chain:
        if not isinstance(other, Signature):
            return NotImplemented
        make: type[chain] = KINDS["chain"]
        return make(self, other)

    # -- serialization --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        """Return the signature :meth:`to_dict` wrote (the kind's own class reads it)."""
        return cls(
            data["task"],
            data.get("args"),
            data.get("kwargs"),
            immutable=bool(data.get("immutable")),
            **dict(data.get("options") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the signature as a JSON-able dict (what messages carry)."""
        return {
            "kind": "task",
            "task": self.task,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "options": self.options,
            "immutable": self.immutable,
        }

    # -- calling --------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task inline with the partial's arguments (no queue, no result row)."""
        merged = self.clone(args, kwargs)
        return registry.get(self.task)(*merged.args, **merged.kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Apply with these arguments added to the partial's; return its result handle."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        """Apply like :meth:`delay` without blocking the event loop."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send like :meth:`apply_async`, in ``sync_to_async(thread_sensitive=True)``."""
        return await off_loop.to_thread_sensitive(self._apply_async, args, kwargs, options)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Freeze and send the workflow; return the handle of its result.

        Called in an event loop, it sends in a helper thread and waits (``django_tq.off_loop``).
        """
        return off_loop.call_off_loop(self._apply_async, args, kwargs, options)

    def _apply_async(
        self, args: Iterable[Any] | None, kwargs: dict[str, Any] | None, options: dict[str, Any]
    ) -> Any:
        if tq_settings.ALWAYS_EAGER:
            return self.apply(args, kwargs, **options)
        extra = {key: options.pop(key) for key in WORKFLOW_WIDE if key in options}
        frozen = self.set(**options).freeze()
        frozen.check()
        parent = current_request.get() if options.get("add_to_parent", True) else None
        root = (parent.root_id or parent.id) if parent else None
        if "publisher" in extra:  # the caller's: it sends when it flushes
            return self._send(frozen, args, kwargs, options, root, extra)
        # Every task of the workflow sent now goes out in one burst (one confirm round).
        with Publisher() as publisher:
            return self._send(
                frozen, args, kwargs, options, root, {**extra, "publisher": publisher}
            )

    @staticmethod
    def _send(
        frozen: Signature,
        args: Iterable[Any] | None,
        kwargs: dict[str, Any] | None,
        options: dict[str, Any],
        root: str | None,
        extra: dict[str, Any],
    ) -> Any:
        place = Placement(
            parent_id=options.get("parent_id"), root_id=root or frozen.first_id(), extra=extra
        )
        frozen.send(tuple(args or ()), dict(kwargs or {}), place)
        return frozen.result()

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run the workflow now, in this process (eager mode); return an EagerResult."""
        merged = self.clone(args, kwargs, **options)
        run = {k: v for k, v in merged.options.items() if k not in ("link", "link_error")}
        links = {k: links_of(merged.options.get(k)) for k in ("link", "link_error")}
        return task_of(self.task).apply(merged.args, merged.kwargs, **run, **links)

    # -- freezing and sending (the canvas's own protocol) ---------------------------------------
    def freeze(self) -> Any:
        """Return a copy where every task has its id (``task_id``) and every group its id."""
        if self.options.get("task_id"):
            return self
        return self.set(task_id=new_id())

    @property
    def id(self) -> str:
        """Return the id of the task whose result is this signature's result (after freeze)."""
        return str(self.options["task_id"])

    def first_id(self) -> str:
        """Return the id of the first task this signature sends (after freeze)."""
        return self.id

    def task_ids(self) -> list[str]:
        """Return the ids of every task in the workflow (after freeze)."""
        return [self.id]

    def check(self) -> None:
        """Raise before anything is sent if the workflow cannot run."""

    def send(self, args: tuple[Any, ...], kwargs: dict[str, Any], place: Placement) -> None:
        """Send this (frozen) signature, with a previous step's result as ``args``."""
        merged = self.clone(args, kwargs)
        options = {**merged.options, **place.options()}
        for key in ("link", "link_error"):
            if key in options:
                options[key] = links_of(options[key])
        task_of(self.task).apply_async(merged.args, merged.kwargs, **options)

    def result(self) -> Any:
        """Return the result handle of this (frozen) signature."""
        return AsyncResult(self.id, task_name=self.task)


def signature(
    value: Any,
    args: Iterable[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Signature:
    """Return a signature: from a task or its name (with arguments and options), or a dict."""
    if isinstance(value, Signature):
        return value.clone(args, kwargs, **options) if args or kwargs or options else value
    if isinstance(value, dict):
        return _from_dict(value)
    return Signature(value, args, kwargs, **options)


def _from_dict(data: dict[str, Any]) -> Signature:
    kind_name = data.get("kind", "task")
    if kind_name not in KINDS:
        raise ValueError(f"Unknown signature kind {kind_name!r}")
    return KINDS[kind_name].from_dict(data)


#: the signature classes by ``kind``; canvas.primitives adds chain, group and chord
KINDS: dict[str, Any] = {"task": Signature}


def kind(cls: S) -> S:
    """Class decorator: make ``signature(d)`` read a dict of ``cls.kind`` with ``cls.from_dict``."""
    KINDS[cls.kind] = cls
    return cls
