"""A loop step's outages: one log line when it starts failing, one when it works again.

Every long-running loop of django_tq (the worker's housekeeping, its consumers, beat) runs the
steps that reach the database or the broker through an :class:`Outage`, so that neither a busy
SQLite file nor a restarting server stops the process or floods its log:

* a transient failure (the database or the broker busy or unreachable: ``OperationalError``,
  ``InterfaceError``, :class:`PublishError`, or what the loop adds) logs one warning, with the
  error, when the outage starts; while it lasts, only debug lines;
* any other exception is a bug, and stays visible: its traceback is logged, once per distinct
  failure (exception type and the line that raised it) while the step keeps failing;
* when the step works again, one info line says so;
* between failed attempts the step backs off: 0.5 s, 1 s, 2 s, … up to ``max_delay``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError

from django_tq.exceptions import PublishError

#: the failures that mean "busy or unreachable, try again", not "a bug"
TRANSIENT: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, PublishError)


def describe(exc: BaseException) -> str:
    """Return ``exc`` on one line: its type and message."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _place(exc: BaseException) -> tuple[str, str, int]:
    """Return what makes a failure distinct: the exception type and the line that raised it."""
    tb = exc.__traceback__
    if tb is None:
        return (type(exc).__qualname__, str(exc), 0)
    while tb.tb_next is not None:
        tb = tb.tb_next
    return (type(exc).__qualname__, tb.tb_frame.f_code.co_filename, tb.tb_lineno)


class Outage:
    """The health of one step of a loop (``what`` names it in the log)."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        transient: tuple[type[BaseException], ...] = TRANSIENT,
        first_delay: float = 0.5,
        max_delay: float = 5.0,
    ) -> None:
        self.what = what
        self.logger = logger
        self.transient = transient
        self.first_delay = first_delay
        self.max_delay = max_delay
        #: failed attempts since the step last worked
        self.failures = 0
        self.started_at: float | None = None
        #: when the step may run again (monotonic seconds)
        self.retry_at = 0.0
        self._logged: set[tuple[str, str, int]] = set()

    @property
    def is_failing(self) -> bool:
        """Return whether the last attempt failed."""
        return self.failures > 0

    def is_due(self, now: float) -> bool:
        """Return whether the step may run at ``now`` (its back-off is over)."""
        return now >= self.retry_at

    def is_transient(self, exc: BaseException) -> bool:
        """Return whether ``exc`` means "busy or unreachable" rather than a bug."""
        return isinstance(exc, self.transient)

    def failed(self, exc: BaseException, now: float) -> float:
        """Note that the step failed with ``exc`` at ``now``; return the seconds to back off."""
        self.failures += 1
        if self.started_at is None:
            self.started_at = now
        delay = min(self.first_delay * 2 ** min(self.failures - 1, 30), self.max_delay)
        self.retry_at = now + delay
        transient = self.is_transient(exc)
        key = ("transient", "", 0) if transient else _place(exc)
        if key in self._logged:
            self.logger.debug("%s failed again: %s", self.what, describe(exc))
        elif transient:
            self._logged.add(key)
            self.logger.warning(
                "%s failed: %s; retrying with back-off (logged once until it works again)",
                self.what,
                describe(exc),
            )
        else:
            self._logged.add(key)
            self.logger.error("%s failed; retrying with back-off", self.what, exc_info=exc)
        return delay

    def succeeded(self, now: float) -> None:
        """Note that the step worked at ``now`` (ends an outage, with one info line)."""
        if not self.failures:
            return
        assert self.started_at is not None
        self.logger.info(
            "%s works again after %.1f s (%d failed attempt(s))",
            self.what,
            max(0.0, now - self.started_at),
            self.failures,
        )
        self.failures = 0
        self.started_at = None
        self.retry_at = 0.0
        self._logged.clear()

    def attempt(self, step: Callable[[], object], now: float) -> bool:
        """Run ``step`` unless it is backing off; return whether it ran and worked."""
        if not self.is_due(now):
            return False
        try:
            step()
        except Exception as exc:
            self.failed(exc, now)
            return False
        self.succeeded(now)
        return True
