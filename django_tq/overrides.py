"""Limits changed while workers run: ``tqcontrol rate_limit`` and ``tqcontrol time_limit``.

:func:`set_rate_limit` and :func:`set_time_limits` write a ``TaskOverride`` row; every consumer
re-reads the rows changed since its last read once a second (:class:`Overrides`, one indexed
query), so a new limit reaches every worker within a second, also workers started later, and
lasts until reset. A global rate limit's bucket is shared by name, so a new rate applies to the
bucket at once; ``rate_limit_scope="worker"`` buckets take it at the next token.

What wins: an override, then the task's own limit (its option, ``apply_async``'s, or the
``TQ`` setting, carried by the message), then the worker's ``--time-limit``/``--soft-time-limit``.
"""

from __future__ import annotations

import datetime as dt

from django.db import router
from django.utils import timezone

from django_tq.models import TaskOverride
from django_tq.rate_limits import Rate, parse_rate
from django_tq.sqlite import write_atomic

#: re-read this far back, so changes written by a host with a slightly late clock are seen
OVERLAP = dt.timedelta(seconds=5)


def _write(task_name: str, **values: object) -> None:
    alias = router.db_for_write(TaskOverride) or "default"
    with write_atomic(alias):  # update_or_create reads, then writes
        TaskOverride.objects.using(alias).update_or_create(
            task_name=task_name, defaults={**values, "updated_at": timezone.now()}
        )


def set_rate_limit(task_name: str, rate: str | None) -> None:
    """Limit ``task_name`` to ``rate`` (``"10/m"``) on every worker; ``None`` resets it.

    Raise ``ValueError`` for a rate ``parse_rate`` does not accept.
    """
    if rate is not None:
        parse_rate(rate)  # raises ValueError with the reason
    _write(task_name, rate_limit=rate)


def set_time_limits(task_name: str, hard: float | None, soft: float | None = None) -> None:
    """Set ``task_name``'s hard and soft time limits (seconds) on every worker; ``None`` resets.

    Raise ``ValueError`` for a limit that is not positive, or a soft limit above the hard one.
    """
    for value in (hard, soft):
        if value is not None and value <= 0:
            raise ValueError(f"a time limit must be positive seconds, not {value}")
    if hard is not None and soft is not None and soft > hard:
        raise ValueError(f"the soft limit ({soft}s) must not exceed the hard one ({hard}s)")
    _write(task_name, time_limit=hard, soft_time_limit=soft)


class Overrides:
    """The overrides a consumer knows, re-read every ``interval`` seconds."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.rates: dict[str, Rate] = {}
        self.time_limits: dict[str, tuple[float | None, float | None]] = {}
        self._since: dt.datetime | None = None
        self._next = 0.0

    def refresh(self, now: float) -> None:
        """Read the overrides changed since the last read (all of them the first time), when due."""
        if now < self._next:
            return
        self._next = now + self.interval
        started = timezone.now()
        rows = TaskOverride.objects.all()
        if self._since is not None:
            rows = rows.filter(updated_at__gte=self._since - OVERLAP)
        for name, rate, hard, soft in rows.values_list(
            "task_name", "rate_limit", "time_limit", "soft_time_limit"
        ):
            parsed = parse_rate(rate) if rate else None
            if parsed is None:
                self.rates.pop(name, None)
            else:
                self.rates[name] = parsed
            if hard is None and soft is None:
                self.time_limits.pop(name, None)
            else:
                self.time_limits[name] = (hard, soft)
        self._since = started

    def rate(self, task_name: str, default: Rate | None) -> Rate | None:
        """Return the rate ``task_name`` runs at: the override, else ``default``."""
        return self.rates.get(task_name, default)
