"""The messages a consumer holds (leased, unacked) until they may start: by ETA, by rate limit.

A message whose ETA is in the future waits in :attr:`Holding.held`; one whose rate-limit token is
reserved waits in :attr:`Holding.throttled` until the token is due. Both are heaps by the
wall-clock time the message is due; the consumer runs other messages meanwhile.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from django_tq.broker.delivery import Delivery
from django_tq.message import TaskMessage

#: (due at, as epoch seconds; sequence number, first in first out among equals; the message)
Held = tuple[float, int, Delivery, TaskMessage]


class Holding:
    """Held messages by the time they are due: ETA first, then the rate-limit tokens reserved."""

    def __init__(self) -> None:
        #: messages not due yet: an ETA in the future, or a rate-limit token not reserved yet
        #: (they go back through admission when due)
        self.held: list[Held] = []
        #: messages whose rate-limit token is reserved, by the time it is due
        self.throttled: list[Held] = []
        self._sequence = itertools.count()

    def hold(self, due: float, delivery: Delivery, message: TaskMessage) -> None:
        """Hold ``message`` until ``due`` (epoch seconds), then admit it again."""
        heapq.heappush(self.held, (due, next(self._sequence), delivery, message))

    def throttle(self, due: float, delivery: Delivery, message: TaskMessage) -> None:
        """Hold ``message`` until its reserved rate-limit token is due (epoch seconds)."""
        heapq.heappush(self.throttled, (due, next(self._sequence), delivery, message))

    def wait_timeout(self, timeout: float, now: float) -> float:
        """Return ``timeout`` shortened to the time until the next held message is due."""
        for heap in (self.held, self.throttled):
            if heap:
                timeout = max(0.0, min(timeout, heap[0][0] - now))
        return timeout

    def pop_due_held(self, now: float) -> tuple[Delivery, TaskMessage] | None:
        """Take the next held message due at ``now``, if any."""
        if self.held and self.held[0][0] <= now:
            _, _, delivery, message = heapq.heappop(self.held)
            return delivery, message
        return None

    def pop_due_throttled(self, now: float) -> tuple[Delivery, TaskMessage] | None:
        """Take the next throttled message whose token is due at ``now``, if any."""
        if self.throttled and self.throttled[0][0] <= now:
            _, _, delivery, message = heapq.heappop(self.throttled)
            return delivery, message
        return None

    def prefetch_extra(self, prefetch: int) -> int:
        """Return how many messages beyond the prefetch window the held ones may take.

        Rate-limited messages count only up to one more window: a consumer never pulls a whole
        queue of them (nor reserves all their tokens) while other consumers could run them.
        """
        return len(self.held) + min(len(self.throttled), prefetch)

    def deliveries(self) -> Iterator[Delivery]:
        """Yield the delivery of every held message."""
        for _, _, delivery, _ in [*self.held, *self.throttled]:
            yield delivery

    def clear(self) -> None:
        """Forget every held message (it comes back by itself: lease or redelivery)."""
        self.held.clear()
        self.throttled.clear()
