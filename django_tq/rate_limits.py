"""Rate limits: ``@task(rate_limit="10/s")`` starts at most that many runs per second, minute or hour.

Global by default: every worker takes its turn from one token bucket per task, a
``RateLimitBucket`` row changed in one short transaction. ``rate_limit_scope="worker"``: each
consumer (a prefork child, a thread of the threads pool, the solo worker) keeps its own bucket in
memory, like Celery's per-worker limits.

A bucket holds at most one token and refills at the rate, so starts are spaced evenly (``10/s``:
one every 0.1 s), as in Celery. A consumer never waits on the bucket: :meth:`RateLimiter.reserve`
takes the next token even if it is due later (``tokens`` goes below zero) and returns how long
until it is due; the consumer holds the message (leased) until then and runs other tasks
meanwhile. A token reserved for a message that is not run (its worker stopped) is not given back:
the rate can be briefly lower than the limit, never higher.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, router, transaction
from django.db.models import F

from django_tq.models import RateLimitBucket

if TYPE_CHECKING:
    from django_tq.tasks import Task

#: seconds per unit of a ``rate_limit`` string
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
GLOBAL = "global"
WORKER = "worker"
SCOPES = (GLOBAL, WORKER)
#: tokens a bucket holds at most: no bursts, starts are spaced by the interval
CAPACITY = 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Rate:
    """A parsed ``rate_limit``: how many starts per second."""

    per_second: float

    @property
    def interval(self) -> float:
        """Return the seconds between two starts."""
        return 1.0 / self.per_second


def parse_rate(value: str | float | None) -> Rate | None:
    """Read a ``rate_limit``: ``"10/s"``, ``"100/m"``, ``"1000/h"`` or a number per second.

    ``None`` and zero mean no limit; anything else raises ``ValueError``.
    """
    if value is None:
        return None
    count: float
    if isinstance(value, int | float) and not isinstance(value, bool):
        count, unit = float(value), "s"
    elif isinstance(value, str):
        number, _, unit = value.strip().partition("/")
        unit = unit.strip() or "s"
        try:
            count = float(number)
        except ValueError:
            count = -1.0
    else:
        count, unit = -1.0, ""
    if unit not in UNITS or not count >= 0 or count == float("inf"):
        raise ValueError(
            f'rate_limit must look like "10/s", "100/m", "1000/h" or a number, got {value!r}'
        )
    return Rate(per_second=count / UNITS[unit]) if count else None


@dataclass(frozen=True, kw_only=True, slots=True)
class Bucket:
    """The tokens of one bucket at ``updated_at`` (negative: tokens already promised)."""

    tokens: float
    updated_at: dt.datetime

    @classmethod
    def full(cls, now: dt.datetime) -> Bucket:
        """Return a bucket holding all its tokens at ``now``."""
        return cls(tokens=CAPACITY, updated_at=now)

    def take(self, rate: Rate, now: dt.datetime) -> tuple[Bucket, float]:
        """Take one token at ``now``; return the bucket after, and seconds until it is due."""
        elapsed = max(0.0, (now - self.updated_at).total_seconds())
        tokens = min(CAPACITY, self.tokens + elapsed * rate.per_second) - 1.0
        wait = -tokens / rate.per_second if tokens < 0 else 0.0
        return Bucket(tokens=tokens, updated_at=max(now, self.updated_at)), wait


def take_shared(name: str, rate: Rate, now: dt.datetime) -> float:
    """Take a token from the ``RateLimitBucket`` row ``name``; return seconds until it is due.

    One short transaction that writes the row before reading it: the write takes the row lock
    (on SQLite, the database's write lock) so two workers never read the same tokens — the same
    on every database, without ``SELECT … FOR UPDATE`` (which SQLite lacks). A missing row is
    created full in a transaction of its own first: a duplicate key error inside the locking
    transaction would leave MySQL holding a shared lock that deadlocks the next writer.
    """
    alias = router.db_for_write(RateLimitBucket) or "default"
    rows = RateLimitBucket.objects.using(alias).filter(name=name)
    while True:
        with transaction.atomic(using=alias):
            if rows.update(tokens=F("tokens")):
                row = rows.get()
                bucket, wait = Bucket(tokens=row.tokens, updated_at=row.updated_at).take(rate, now)
                rows.update(tokens=bucket.tokens, updated_at=bucket.updated_at)
                return wait
        try:
            with transaction.atomic(using=alias):
                full = Bucket.full(now)
                rows.create(name=name, tokens=full.tokens, updated_at=full.updated_at)
        except IntegrityError:
            pass  # another worker created it first


class RateLimiter:
    """Reserve start times for a consumer's rate-limited tasks (one limiter per consumer)."""

    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}  #: ``rate_limit_scope="worker"`` buckets

    def reserve(self, task: Task[Any, Any], now: dt.datetime, *, rate: Rate | None = None) -> float:
        """Take a token for one run of ``task``; return seconds until it may start (0: now).

        ``rate`` (a ``tqcontrol rate_limit`` override) replaces the task's own.
        """
        rate = rate or task.rate
        if rate is None:
            return 0.0
        if task.rate_limit_scope == WORKER:
            bucket = self._buckets.get(task.name) or Bucket.full(now)
            self._buckets[task.name], wait = bucket.take(rate, now)
            return wait
        return take_shared(task.name, rate, now)
