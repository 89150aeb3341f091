"""``tqworker --autoscale MAX,MIN``: more consumers while messages wait, fewer when idle.

The worker's parent asks :meth:`Autoscaler.tick` once a tick. Every ``interval`` seconds it
reads how many consumers are busy and how many messages wait in the worker's queues (one depth
read per queue, the same the admin shows), and:

* **grows** — when every consumer is busy and messages wait beyond those being run — by as many
  consumers as wait, up to ``maximum``, at once;
* **shrinks** — when some consumers have been idle for ``keepalive`` seconds in a row and no
  message waits — to the number busy, never below ``minimum``. Consumers leave warm: a running task always finishes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django_tq.worker.pool import Pool

logger = logging.getLogger("django_tq.worker")


class Autoscaler:
    """Sizes ``pool`` between ``minimum`` and ``maximum`` by backlog and idleness."""

    def __init__(
        self,
        pool: Pool,
        *,
        maximum: int,
        minimum: int,
        backlog: Callable[[], int | None],
        keepalive: float = 30.0,
        interval: float = 1.0,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"--autoscale needs 1 <= MIN <= MAX, not {maximum},{minimum}")
        self.pool = pool
        self.maximum = maximum
        self.minimum = minimum
        self.backlog = backlog
        self.keepalive = keepalive
        self.interval = interval
        self._next = 0.0
        self._idle_since: float | None = None

    def tick(self, now: float) -> int | None:
        """Resize the pool when due and needed; return the new size, or None."""
        if now < self._next:
            return None
        self._next = now + self.interval
        size = self.pool.concurrency
        busy = len(self.pool.running_tasks())
        if busy < size:
            if self._idle_since is None:
                self._idle_since = now
            target = max(self.minimum, busy)
            if now - self._idle_since < self.keepalive or target >= size or self._waiting(busy):
                return None
            return self._resize(target, f"{size - busy} idle for {self.keepalive:g}s")
        self._idle_since = None
        waiting = self._waiting(busy) if size < self.maximum else 0
        if not waiting:
            return None
        return self._resize(min(self.maximum, size + waiting), f"{waiting} waiting")

    def _waiting(self, busy: int) -> int:
        """Return how many messages wait beyond the ``busy`` ones being run (0 when unknown)."""
        depth = self.backlog()
        return 0 if depth is None else max(0, depth - busy)

    def _resize(self, size: int, why: str) -> int:
        logger.info("Autoscale: %d -> %d consumers (%s)", self.pool.concurrency, size, why)
        self.pool.resize(size)
        self._idle_since = None
        return size
