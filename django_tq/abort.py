"""Stopping a running task from outside it: ``terminate`` interrupts it, ``is_aborted()`` polls.

Every execution runs inside an :class:`Abort` (``with Abort(task_id) as abort: …``), which
registers it under its task id in this process. ``revoke(terminate=True, signal=…)`` reaches it
through :func:`terminate`, called by the pool — the prefork child's signal handler, or the
worker's housekeeping for the threads and solo pools. What the task then sees
(:func:`exception_for`):

* ``SIGTERM``, ``SIGINT``, and ``SIGKILL`` where nothing can be killed (a thread):
  :class:`~django_tq.exceptions.Terminated`, a ``BaseException`` that ``except Exception`` does
  not swallow;
* ``SIGUSR1``: :class:`~django_tq.exceptions.SoftTimeLimitExceeded`, which the task may catch to
  clean up (Celery's meaning of ``SIGUSR1``);
* an ``async def`` task, whatever the signal: its asyncio task is cancelled
  (``asyncio.CancelledError`` at its next ``await``).

From a signal handler that interrupted the task's own thread (prefork) the exception is raised at
once, which also ends a ``time.sleep`` or any call Python retries after a signal. From another
thread (threads, solo) it is raised at the task thread's next bytecode
(``PyThreadState_SetAsyncExc``): a blocking call returns first. Either way the execution ends
``REVOKED``, whatever the task does with the exception.

:meth:`Abort.is_aborted` (``self.is_aborted()`` in a bound task) is true once the task is
terminated or revoked; it reads the ``Revocation`` table at most every :data:`POLL_INTERVAL`.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal as signal_module
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import DatabaseError, close_old_connections, router

from django_tq.exceptions import SoftTimeLimitExceeded, Terminated
from django_tq.models import Revocation

logger = logging.getLogger("django_tq.execution")

#: the signals ``revoke(terminate=True, signal=…)`` accepts
SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGKILL")
#: seconds between two reads of the ``Revocation`` table by one execution's ``is_aborted()``
POLL_INTERVAL = 0.5
#: terminate requests kept for executions that have not begun yet (the newest ones)
PENDING_LIMIT = 64

_running: dict[str, Abort] = {}
_pending: dict[str, str] = {}
#: guards both, and every execution's state; reentrant: a signal handler may interrupt the very
#: thread that holds it
_lock = threading.RLock()


def signal_name(value: str | int) -> str:
    """Return the name (``"SIGTERM"``) of a signal terminate accepts: ``"TERM"``, ``15``, ….

    Raise ``ValueError`` for any other signal.
    """
    if isinstance(value, int):
        try:
            name = signal_module.Signals(value).name
        except ValueError:
            name = str(value)
    else:
        name = str(value).strip().upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in SIGNALS:
        raise ValueError(f"terminate accepts {', '.join(SIGNALS)}, not {value!r}")
    return name


def exception_for(name: str) -> type[BaseException]:
    """Return the exception a terminate with the signal ``name`` raises inside a (sync) task."""
    return SoftTimeLimitExceeded if name == "SIGUSR1" else Terminated


def _set_async_exc(thread_id: int, error: type[BaseException] | None) -> None:
    """Raise ``error`` in thread ``thread_id`` at its next bytecode (``None``: cancel that)."""
    exc = ctypes.py_object(error) if error is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exc)


class Abort:
    """The stop switch of one running execution of ``task_id``; a context manager around it.

    Only the code inside the ``with`` block can be interrupted: a terminate that arrives before
    it is raised as the block begins, one that arrives after it is too late and ignored.
    """

    def __init__(self, task_id: str, *, is_async: bool = False) -> None:
        self.task_id = task_id
        self.is_async = is_async
        self.thread_id = threading.get_ident()
        self.signal_name: str | None = None  #: the terminate signal, once one was asked for
        self.aborted = False  #: ``is_aborted()`` returned True: the task saw its revocation
        self._active = False
        self._async_exc = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[Any] | None = None
        self._revoked = False
        self._next_poll = 0.0

    def __enter__(self) -> Abort:
        try:
            with _lock:
                _running[self.task_id] = self
                if self.signal_name is None:
                    self.signal_name = _pending.pop(self.task_id, None) if _pending else None
                self._active = True
                if self.signal_name is not None and not self.is_async:  # asked before it began
                    raise exception_for(self.signal_name)()
        except BaseException:  # that one, or a signal handler's, raised while entering
            self._leave()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._leave()

    def _leave(self) -> None:
        with _lock:
            self._active = False
            if _running.get(self.task_id) is self:
                del _running[self.task_id]
            if self._async_exc:  # asked but maybe not raised yet: never in the worker's code
                self._async_exc = False
                _set_async_exc(self.thread_id, None)

    async def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Await ``coroutine`` in this execution's asyncio task, which terminate cancels."""
        with _lock:
            self._loop = asyncio.get_running_loop()
            self._future = asyncio.current_task()
            if self.signal_name is not None and self._future is not None:
                self._future.cancel()
        return await coroutine

    def terminate(self, name: str) -> None:
        """Interrupt the task as the signal ``name`` means (again only for another signal)."""
        with _lock:
            if self.signal_name == name:
                return
            self.signal_name = name
            if not self._active:
                return  # raised as the block begins, or too late
            if self.is_async:
                self._cancel()  # or at once in run(), if its loop has not started yet
                return
            error = exception_for(name)
            if threading.get_ident() == self.thread_id:
                raise error()  # from a signal handler that interrupted the task itself
            self._async_exc = True
            _set_async_exc(self.thread_id, error)

    def _cancel(self) -> None:
        loop, future = self._loop, self._future
        if loop is None or future is None:
            return
        try:
            loop.call_soon_threadsafe(future.cancel)
        except RuntimeError:  # the loop is closed: the task is over
            pass

    @property
    def terminated(self) -> bool:
        """Return whether terminate was asked for this execution."""
        return self.signal_name is not None

    def within_a_terminate(self) -> bool:
        """Return whether an execution that runs this one (eagerly, in the same thread) is being
        terminated: then an exception this one did not ask for is that one's."""
        return any(
            other is not self and other.thread_id == self.thread_id and other.terminated
            for other in list(_running.values())
        )

    def is_aborted(self) -> bool:
        """Return whether the task is terminated or revoked (a cheap poll for long loops)."""
        if self.signal_name is None and not self._revoked:
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + POLL_INTERVAL
                self._revoked = is_revoked(self.task_id)
        if self.signal_name is not None or self._revoked:
            self.aborted = True
        return self.aborted


def terminate(task_id: str, name: str) -> None:
    """Interrupt this process's execution of ``task_id`` as the signal ``name`` means.

    An execution that has not begun yet is interrupted as it begins.
    """
    with _lock:
        running = _running.get(task_id)
        if running is None:
            _pending[task_id] = name
            while len(_pending) > PENDING_LIMIT:
                del _pending[next(iter(_pending))]
            return
    running.terminate(name)


def is_aborted(task_id: str) -> bool:
    """Return whether ``task_id`` was terminated or revoked (``self.is_aborted()``)."""
    running = _running.get(task_id)
    return running.is_aborted() if running is not None else is_revoked(task_id)


def is_revoked(task_id: str) -> bool:
    """Return whether ``task_id`` has a ``Revocation`` row.

    Inside an event loop (an ``async def`` task) the query runs in a helper thread: Django
    refuses synchronous queries in a thread that runs a loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _read_revoked(task_id)
    return _reader().submit(_read_revoked_in_helper, task_id).result()


def _read_revoked_in_helper(task_id: str) -> bool:
    close_old_connections()  # the helper thread's own connection (never inside a transaction)
    return _read_revoked(task_id)


def _read_revoked(task_id: str) -> bool:
    alias = router.db_for_read(Revocation) or "default"
    try:
        return Revocation.objects.using(alias).filter(task_id=task_id).exists()
    except DatabaseError:
        logger.warning("Reading the revocation of %s failed; not aborted for now", task_id)
        return False


_executor: tuple[int, ThreadPoolExecutor] | None = None


def _reader() -> ThreadPoolExecutor:
    """Return this process's one-thread executor for queries made from an event loop."""
    global _executor
    if _executor is None or _executor[0] != os.getpid():
        _executor = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="django_tq-aborted"))
    return _executor[1]
