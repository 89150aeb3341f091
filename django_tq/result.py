"""Result handles: ``AsyncResult`` for an enqueued task, ``EagerResult`` for one run in-process,
``GroupResult`` for a group; and :func:`workflow_graph`, the tree of tasks a root task started."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from django.db import router

from django_tq import control, off_loop, serialization, states
from django_tq.context import current_request
from django_tq.enqueue import is_waiting_for_commit
from django_tq.exceptions import TaskError, TaskRevokedError, TimeoutError
from django_tq.graph import workflow_graph as workflow_graph  # re-exported
from django_tq.models import GroupResult as GroupRow
from django_tq.outcome import Outcome
from django_tq.result_backends import NullBackend, ResultBackend, ResultData, get_backend
from django_tq.sqlite import write_atomic

R = TypeVar("R")

#: a handle as plain data, in Celery's shape: ``((id, parent's tuple or None), None)`` for a task,
#: ``((id, parent's tuple or None), [member tuples])`` for a group (lists once through JSON)
ResultTuple = tuple[tuple[str, Any], list[Any] | None]


def _pauses(task_id: str, timeout: float | None, interval: float) -> Iterator[float]:
    """Return the pauses between reads of a result: 5 ms, doubling up to ``interval``.

    Taking one raises ``TimeoutError`` instead once ``timeout`` seconds have passed since this call.
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    def pauses() -> Iterator[float]:
        pause = min(interval, 0.005)
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Task {task_id} did not finish within {timeout} seconds.")
            yield pause
            pause = min(pause * 2, interval)

    return pauses()


class AsyncResult(Generic[R]):
    """The state and outcome of a task, read from the result backend.

    Like Celery's, ``state``, ``result`` and friends read the backend on each access until the
    task is ready; after that the final data is kept.
    """

    def __init__(
        self, id: str, *, task_name: str | None = None, backend: ResultBackend | None = None
    ) -> None:
        self.id = str(id)
        self.task_name = task_name
        self._backend = backend
        self._final: ResultData | None = None
        self._parent: AsyncResult[Any] | GroupResult | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def backend(self) -> ResultBackend:
        """Return the result backend this handle reads."""
        return self._backend or get_backend()

    def _data(self) -> ResultData | None:
        if self._final is not None:
            return self._final
        data = self.backend.get(self.id)
        if data is not None and data.state in states.READY_STATES:
            self._final = data
        return data

    # -- state ------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """Return the state: PENDING for an unknown id, QUEUED once recorded, …"""
        data = self._data()
        return data.state if data is not None else states.PENDING

    status = state

    @property
    def result(self) -> Any:
        """Return the return value, the exception for a failure, or the meta of a custom state."""
        data = self._data()
        if data is None:
            return None
        if serialization.is_exception_data(data.result):
            return serialization.exception_from_data(data.result)
        return data.result

    info = result

    @property
    def traceback(self) -> str:
        """Return the traceback of a failure ('' otherwise)."""
        data = self._data()
        return data.traceback if data is not None else ""

    @property
    def date_done(self) -> dt.datetime | None:
        """Return when the task reached a final state."""
        data = self._data()
        return data.date_done if data is not None else None

    def _field(self, name: str, default: Any = None) -> Any:
        data = self._data()
        return getattr(data, name) if data is not None else default

    @property
    def name(self) -> str | None:
        """Return the task's registered name."""
        return self._field("task_name") or self.task_name

    @property
    def args(self) -> list[Any] | None:
        """Return the positional arguments the task was called with."""
        return self._field("args")

    @property
    def kwargs(self) -> dict[str, Any] | None:
        """Return the keyword arguments the task was called with."""
        return self._field("kwargs")

    @property
    def retries(self) -> int:
        """Return how many times the task was retried."""
        return int(self._field("retries", 0))

    @property
    def worker(self) -> str:
        """Return the name of the worker that ran the task."""
        return str(self._field("worker", ""))

    @property
    def queue(self) -> str:
        """Return the queue the task was sent to."""
        return str(self._field("queue", ""))

    def ready(self) -> bool:
        """Return whether the task reached a final state."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        """Return whether the task succeeded."""
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        """Return whether the task failed (or was dead-lettered)."""
        return self.state in (states.FAILURE, states.DEAD)

    # -- the workflow around it ------------------------------------------------------------
    @property
    def parent(self) -> AsyncResult[Any] | GroupResult | None:
        """Return the result of the step before this one (a task, or the group of a chord)."""
        if self._parent is not None:
            return self._parent
        parent_id = self._field("parent_id")
        if not parent_id:
            return None
        if self.backend.get(parent_id) is None:
            group = GroupResult.restore(parent_id)
            if group is not None:
                return group
        return AsyncResult(parent_id, backend=self._backend)

    @parent.setter
    def parent(self, value: AsyncResult[Any] | GroupResult | None) -> None:
        self._parent = value

    @property
    def children(self) -> list[AsyncResult[Any]]:
        """Return the results of the tasks this task applied (its next steps and callbacks)."""
        return [AsyncResult(i, backend=self._backend) for i in self.backend.children(self.id)]

    # -- waiting ----------------------------------------------------------------------------
    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.1,
        disable_sync_subtasks: bool = True,
    ) -> R:
        """Wait for the task and return its value; raise its error when ``propagate``."""
        self._check_waitable(disable_sync_subtasks)
        pauses = _pauses(self.id, timeout, interval)
        first = True
        while True:
            data = self._data()
            if data is not None and data.state in states.READY_STATES:
                return self._outcome(data, propagate)
            if first and is_waiting_for_commit(self.id):
                raise RuntimeError(
                    f"Task {self.id} is published when the current transaction commits; "
                    "waiting for it inside the transaction would never end."
                )
            first = False
            time.sleep(next(pauses))

    wait = get

    async def aget(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.1,
        disable_sync_subtasks: bool = True,
    ) -> R:
        """Wait for the task like :meth:`get`, polling with ``asyncio.sleep`` between reads.

        Each read runs in ``sync_to_async(thread_sensitive=True)``; the loop goes on between them.
        """
        self._check_waitable(disable_sync_subtasks)
        pauses = _pauses(self.id, timeout, interval)
        while True:
            data = await off_loop.to_thread_sensitive(self._data)
            if data is not None and data.state in states.READY_STATES:
                return self._outcome(data, propagate)
            await asyncio.sleep(next(pauses))

    def _check_waitable(self, disable_sync_subtasks: bool) -> None:
        """Raise ``RuntimeError`` when waiting could never end: no backend, or inside a task."""
        if isinstance(self.backend, NullBackend):
            raise RuntimeError("No result backend is configured (TQ['RESULT_BACKEND'] is None).")
        if disable_sync_subtasks and current_request.get() is not None:
            raise RuntimeError(
                "Never wait for a result within a task (result.get(), await result.aget()): "
                "it can deadlock the worker. Use a chain or chord, or pass "
                "disable_sync_subtasks=False."
            )

    async def astate(self) -> str:
        """Return :attr:`state`, read in ``sync_to_async(thread_sensitive=True)``."""
        data = await off_loop.to_thread_sensitive(self._data)
        return data.state if data is not None else states.PENDING

    def _outcome(self, data: ResultData, propagate: bool) -> Any:
        value = data.result
        if data.state == states.SUCCESS:
            return value
        error: BaseException
        if serialization.is_exception_data(value):
            error = serialization.exception_from_data(value)
        elif data.state == states.REVOKED:
            error = TaskRevokedError(f"Task {self.id} was revoked.")
        elif data.state == states.DEAD:
            reason = value.get("reason") if isinstance(value, dict) else value
            error = TaskError(states.DEAD, f"Task {self.id} was dead-lettered: {reason}")
        else:
            error = RuntimeError(f"Task {self.id} ended in state {data.state}: {value!r}")
        if propagate:
            raise error
        return error

    def revoke(self, terminate: bool = False, signal: str | int = "SIGTERM") -> None:
        """Revoke the task: it will not run; ``terminate=True`` stops it if running.

        ``signal`` (``SIGTERM``, ``SIGINT``, ``SIGUSR1``, ``SIGKILL``) says how: see
        :func:`django_tq.control.revoke`.
        """
        control.revoke(self.id, terminate=terminate, signal=signal)
        self._final = None

    def forget(self) -> None:
        """Delete the stored result."""
        self.backend.forget(self.id)
        self._final = None

    def as_tuple(self) -> ResultTuple:
        """Return this handle and its parents as plain data (Celery's shape), for :meth:`from_tuple`."""
        parent = self.parent
        return ((self.id, parent.as_tuple() if parent is not None else None), None)

    @classmethod
    def from_tuple(cls, value: ResultTuple | Any) -> AsyncResult[Any]:
        """Rebuild a handle, its parents included, from :meth:`as_tuple` (or Celery's)."""
        handle = result_from_tuple(value)
        if not isinstance(handle, AsyncResult):
            raise TypeError(f"{value!r} is a group's tuple: use GroupResult.from_tuple().")
        return handle


class EagerResult(AsyncResult[R]):
    """The outcome of a task run in this process (``apply()``, ``ALWAYS_EAGER``)."""

    def __init__(self, id: str, outcome: Outcome) -> None:
        super().__init__(id)
        self.outcome = outcome

    def _data(self) -> ResultData:
        return ResultData(
            task_id=self.id,
            state=self.outcome.state,
            result=serialization.exception_to_data(self.outcome.exception)
            if self.outcome.exception is not None
            else self.outcome.result,
            traceback=self.outcome.traceback,
        )

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.1,
        disable_sync_subtasks: bool = True,
    ) -> R:
        if self.outcome.exception is not None:
            if propagate:
                raise self.outcome.exception
            return self.outcome.exception  # type: ignore[return-value]  # Celery returns the error
        return self.outcome.result

    async def aget(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.1,
        disable_sync_subtasks: bool = True,
    ) -> R:
        """Return :meth:`get` at once: the outcome is here, nothing is read."""
        return self.get(timeout, propagate, interval, disable_sync_subtasks)

    async def astate(self) -> str:
        """Return :attr:`state` at once."""
        return self.state

    def forget(self) -> None:
        """Nothing is stored for an eager result."""


class GroupResult:
    """The results of a group's tasks, in the order they were given."""

    def __init__(self, id: str, results: list[AsyncResult[Any]] | None = None) -> None:
        self.id = str(id)
        self.results = list(results or [])
        self._parent: AsyncResult[Any] | GroupResult | None = None

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __iter__(self) -> Iterator[AsyncResult[Any]]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def parent(self) -> AsyncResult[Any] | GroupResult | None:
        """Return the result of the step before the group (for a group in a chain)."""
        return self._parent

    @parent.setter
    def parent(self, value: AsyncResult[Any] | GroupResult | None) -> None:
        self._parent = value

    @property
    def children(self) -> list[AsyncResult[Any]]:
        """Return the members' results (Celery's spelling)."""
        return self.results

    def completed_count(self) -> int:
        """Return how many members succeeded."""
        return sum(1 for result in self.results if result.successful())

    def ready(self) -> bool:
        """Return whether every member reached a final state."""
        return all(result.ready() for result in self.results)

    def successful(self) -> bool:
        """Return whether every member succeeded."""
        return all(result.successful() for result in self.results)

    def failed(self) -> bool:
        """Return whether any member failed."""
        return any(result.failed() for result in self.results)

    def waiting(self) -> bool:
        """Return whether any member is not final yet."""
        return not self.ready()

    def join(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Wait for every member; return their values in order (raise the first error)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(result.get(timeout=remaining, propagate=propagate))
        return values

    get = join

    async def ajoin(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Wait for every member like :meth:`join`, without blocking the event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(await result.aget(timeout=remaining, propagate=propagate))
        return values

    aget = ajoin

    def revoke(self, terminate: bool = False, signal: str | int = "SIGTERM") -> None:
        """Revoke every member."""
        for result in self.results:
            result.revoke(terminate=terminate, signal=signal)

    def forget(self) -> None:
        """Delete the members' results and the group's record."""
        for result in self.results:
            result.forget()
        GroupRow.objects.filter(group_id=self.id).delete()

    def save(self) -> GroupResult:
        """Store the group (its id and members), so :meth:`restore` finds it."""
        alias = router.db_for_write(GroupRow) or "default"
        with write_atomic(alias):  # update_or_create reads, then writes
            GroupRow.objects.using(alias).update_or_create(
                group_id=self.id, defaults={"result_ids": [r.id for r in self.results]}
            )
        return self

    @classmethod
    def restore(cls, id: str) -> GroupResult | None:
        """Return the stored group ``id``, or None if it was never stored."""
        ids = GroupRow.objects.filter(group_id=id).values_list("result_ids", flat=True).first()
        if ids is None:
            return None
        return cls(id, [AsyncResult(task_id) for task_id in ids])

    def as_tuple(self) -> ResultTuple:
        """Return the group, its members and its parents as plain data, for :meth:`from_tuple`."""
        parent = self.parent
        return (
            (self.id, parent.as_tuple() if parent is not None else None),
            [result.as_tuple() for result in self.results],
        )

    @classmethod
    def from_tuple(cls, value: ResultTuple | Any) -> GroupResult:
        """Rebuild a group handle, its members and parents included, from :meth:`as_tuple`."""
        handle = result_from_tuple(value)
        if not isinstance(handle, GroupResult):
            raise TypeError(f"{value!r} is a task's tuple: use AsyncResult.from_tuple().")
        return handle


def result_from_tuple(value: ResultTuple | Any) -> AsyncResult[Any] | GroupResult:
    """Rebuild the handle ``as_tuple()`` made (a task's or a group's), parents included.

    Also reads the older flat forms, ``(id, None)`` and ``(id, [member tuples])``.
    """
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"Not a result tuple: {value!r}")
    node, members = value
    task_id, parent = node if isinstance(node, list | tuple) else (node, None)
    handle: AsyncResult[Any] | GroupResult
    if members is not None:
        handle = GroupResult(task_id, [AsyncResult.from_tuple(member) for member in members])
    else:
        handle = AsyncResult(task_id)
    if parent:
        handle.parent = result_from_tuple(parent)
    return handle
