"""Exceptions raised by django_tq, and the ones tasks raise to steer their own execution."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

_BuiltinTimeoutError = builtins.TimeoutError  # the base of our TimeoutError, which shadows it


class TQError(Exception):
    """Base class of every django_tq error."""


class NotRegistered(TQError, KeyError):
    """No task is registered under this name."""

    def __str__(self) -> str:
        return f"Task {self.args[0]!r} is not registered." if self.args else "Task not registered."


class AlreadyRegistered(TQError):
    """Another task is already registered under this name."""


class PublishError(TQError):
    """The message could not be handed to the broker (unreachable, refused, or not confirmed)."""

    def __init__(self, *args: object, failed: Sequence[str] = ()) -> None:
        super().__init__(*args)
        #: the ids of the tasks of a burst the broker did not take (empty: the whole publish)
        self.failed: tuple[str, ...] = tuple(failed)


class QueueNotFound(TQError, KeyError):
    """A message names a queue (or a routing key reaching none) that ``TQ["QUEUES"]`` lacks."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "Queue not found."


class Superseded(TQError):
    """A newer delivery of the task started (or finished) it while this execution ran.

    Raised by a fenced result write (``ResultBackend.store(fenced=True)``): the worker that ran
    this execution lost its lease — cut off from the broker past ``LEASE_SECONDS``, say — and
    another took the message over. The stale outcome is not recorded and nothing follows it
    (no retry, no next chain step, no chord count); the newer delivery's outcome stands.
    """


class PayloadTooLarge(TQError, ValueError):
    """The serialized message is larger than ``TQ["MAX_PAYLOAD_BYTES"]``."""


class EncodeError(TQError, TypeError):
    """Arguments or a return value cannot be serialized with the task's serializer."""


class DecodeError(TQError, ValueError):
    """A message body cannot be decoded (malformed, or a content type that is not accepted)."""


class TimeoutError(TQError, _BuiltinTimeoutError):
    """``AsyncResult.get()`` did not see the task finish in time."""


class TaskError(TQError):
    """A stored task failure whose exception class cannot be re-created safely."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


class TaskRevokedError(TQError):
    """The task was revoked before or while it ran."""


class Terminated(BaseException):
    """Raised inside a task that ``revoke(terminate=True)`` stops; the task ends ``REVOKED``.

    A ``BaseException``, like ``SystemExit`` and ``asyncio.CancelledError``: ``except Exception``
    does not swallow it, ``finally`` blocks and ``except Terminated`` run.
    """

    def __init__(self, message: str = "terminated by revoke(terminate=True)") -> None:
        super().__init__(message)


class WorkerLostError(TQError):
    """The worker process running the task died."""


class TimeLimitExceeded(TQError):
    """The task ran past its hard time limit and its process was killed."""


class SoftTimeLimitExceeded(TQError):
    """The task ran past its soft time limit (raised inside the task, which may clean up)."""


class MaxRetriesExceededError(TQError):
    """``self.retry()`` was called after ``max_retries`` retries."""


class Retry(TQError):
    """Raised by ``self.retry()``: the task is scheduled to run again."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: datetime | None = None,
    ) -> None:
        super().__init__(message or (f"Retry in {when}" if when else "Retry"))
        self.exc = exc
        self.when = when
        self.queue: str | None = None


class Replace(TQError):
    """Raised by ``self.replace(sig)``: the task is replaced by the signature (a dict) it carries."""

    def __init__(self, signature: dict[str, Any]) -> None:
        super().__init__(f"replaced by {signature.get('task') or signature.get('kind')}")
        self.signature = signature


class Ignore(TQError):
    """Raised by a task to stop without recording a state (the message is acked)."""


class Reject(TQError):
    """Raised by a task to reject its message; ``requeue=True`` puts it back on the queue."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.requeue = requeue
