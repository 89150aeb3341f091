"""``Outcome``: what one execution of a task message came to (made by ``execution``, read by
``workflow``, the worker and ``EagerResult``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django_tq.message import TaskMessage


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """What one execution of a task message came to."""

    state: str  #: SUCCESS, FAILURE, RETRY, REVOKED, a custom state, IGNORED, REJECTED or REPLACED
    result: Any = None  #: the return value, or the exception as data
    exception: BaseException | None = None
    traceback: str = ""
    retry: TaskMessage | None = None  #: the next attempt, for RETRY
    requeue: bool = False  #: ``Reject(requeue=True)``
    runtime: float = 0.0
    replacement: dict[str, Any] | None = None  #: the signature of ``self.replace(sig)``
    #: REVOKED: the signal ``revoke(terminate=True)`` stopped the running task with
    terminated: str | None = None
    expired: bool = False  #: REVOKED: the message's ``expires`` had passed, it did not run
