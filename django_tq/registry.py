"""The task registry: name -> task, filled as modules declaring tasks are imported.

It is also how the modules below ``tasks.py`` (canvas, workflow, control) reach a task: by name,
with :meth:`TaskRegistry.sender`. A name this process does not know (a task registered on the
workers only) gets a stand-in that can only be sent; ``tasks.py`` says how to make one
(:meth:`TaskRegistry.use_stand_in`) when it is imported, which Django's app loading does.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext_lazy as _

from django_tq.exceptions import AlreadyRegistered, NotRegistered

if TYPE_CHECKING:
    from django_tq.tasks import Task


class TaskRegistry:
    """Registered tasks by name. Registering a second, different task under a name raises."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._lock = threading.Lock()
        self._stand_in: Callable[[str], Task[Any, Any]] | None = None

    def register(self, task: Task[Any, Any]) -> None:
        """Add ``task``; re-registering the same function (a module imported twice) replaces it."""
        with self._lock:
            existing = self._tasks.get(task.name)
            if existing is not None and existing.origin != task.origin:
                raise AlreadyRegistered(
                    f"Task name {task.name!r} is already used by {existing.origin}; "
                    f"{task.origin} cannot register it too. Pass name= to one of them."
                )
            self._tasks[task.name] = task

    def unregister(self, name: str) -> None:
        """Remove the task called ``name`` (tests use this)."""
        with self._lock:
            self._tasks.pop(name, None)

    def get(self, name: str) -> Task[Any, Any]:
        """Return the task called ``name`` or raise :class:`NotRegistered`."""
        try:
            return self._tasks[name]
        except KeyError:
            raise NotRegistered(name) from None

    def use_stand_in(self, make: Callable[[str], Task[Any, Any]]) -> None:
        """Make stand-ins with ``make(name)`` for the names :meth:`sender` does not know."""
        self._stand_in = make

    def sender(self, name: str) -> Task[Any, Any]:
        """Return the task registered as ``name``, or a stand-in that can only be sent."""
        task = self._tasks.get(name)
        if task is not None:
            return task
        if self._stand_in is None:  # django_tq.tasks sets it; Django's app loading imports it
            raise NotRegistered(f"{name} (and django_tq.tasks is not imported to send it)")
        return self._stand_in(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    def items(self) -> list[tuple[str, Task[Any, Any]]]:
        """Return ``(name, task)`` pairs sorted by name."""
        return sorted(self._tasks.items())

    def signature_mismatch(
        self, name: str, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> str | None:
        """Return why ``args``/``kwargs`` do not fit task ``name``'s signature, if they do not.

        ``None`` also when this process does not know the task (the worker may) or its
        signature cannot be read. A bound task's ``self`` is left out.
        """
        task = self._tasks.get(name)
        if task is None:
            return None
        try:
            signature = inspect.signature(task.run)
        except (TypeError, ValueError):
            return None
        parameters = list(signature.parameters.values())[1 if task.bind else 0 :]  # not ``self``
        signature = inspect.Signature(
            [parameter.replace(annotation=inspect.Parameter.empty) for parameter in parameters]
        )
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            return str(
                _("These arguments do not fit %(task)s%(signature)s: %(error)s.")
                % {"task": name, "signature": signature, "error": exc}
            )
        return None


registry = TaskRegistry()
