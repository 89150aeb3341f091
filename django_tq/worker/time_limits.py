"""The soft time limit inside the consumer, and the warning when a pool cannot enforce a limit.

The hard limit is the prefork parent's (it kills the child, see ``pool.py``); the soft one raises
:class:`~django_tq.exceptions.SoftTimeLimitExceeded` in the task, from a ``SIGALRM`` timer.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django_tq.exceptions import SoftTimeLimitExceeded
from django_tq.message import TaskMessage

logger = logging.getLogger("django_tq.worker")


@contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`SoftTimeLimitExceeded` in the task after ``seconds`` (a ``SIGALRM`` timer).

    Signals reach only a process's main thread: prefork children and the solo pool. Elsewhere
    (the threads pool) the limit is not enforced.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit ({seconds:g} s) exceeded")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def warn_unenforced(message: TaskMessage, warned: set[str]) -> None:
    """Log once per task (``warned`` holds the names) that this pool cannot enforce its limits."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    if (message.time_limit or not in_main_thread) and message.task not in warned:
        warned.add(message.task)
        logger.warning(
            "Time limits of %s are not enforced by this pool: the hard limit needs "
            "prefork, the soft limit prefork or solo",
            message.task,
        )
