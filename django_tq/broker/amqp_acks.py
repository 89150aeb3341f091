"""RabbitMQ acks held back for a moment and sent as one ``basic.ack(multiple=True)``.

One ``basic.ack`` frame per task wakes RabbitMQ once per task (half a consumer's wall time in
the drain profile). A consumer's channel numbers its deliveries 1, 2, 3, … and
``basic.ack(tag, multiple=True)`` settles every unsettled delivery up to ``tag`` — including
any that are not finished. So :class:`AckWindow` keeps every delivery of the channel that is not
settled yet, in delivery order, and sends a multiple ack only up to the end of the *contiguous
prefix of finished ones*: a message held for its ETA or its rate limit, one still running, or one
given back (``basic.reject``, sent at once) is never covered by it. A finished delivery behind an
unfinished one is acked on its own when the batch goes out.

The batch goes out when ``batch`` acks wait (so the prefetch window refills while the rest runs),
before the consumer waits for deliveries that are not there yet (:meth:`Subscription.drain`),
when an ack must be sent now (``acks_late=False``: acked before the task runs), on close, and
otherwise ``delay`` seconds after the first waiting ack (a flusher thread: a long task after short
ones). A consumer killed before the batch went out leaves those finished messages unacked:
RabbitMQ redelivers them when the connection drops, and they run again unless their result is
recorded already (at-least-once; ``docs/reliability.md``).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from django_tq.transport.ack_batch import DelayedFlush

logger = logging.getLogger("django_tq.broker")


class AckWindow:
    """The deliveries of one channel not settled yet, and the acks not sent yet."""

    def __init__(self, channel: Any, *, batch: int, delay: float) -> None:
        #: py-amqp's channel: ``basic_ack`` (py-amqp writes each frame under its own lock)
        self._channel = channel
        #: acks waiting before a batch goes out on its own (the consumer's window refills)
        self.batch = max(1, batch)
        #: the longest an ack waits before the flusher thread sends it
        self.delay = delay
        #: delivery tag -> finished (acked by the consumer, not sent yet); in delivery order
        self._unsettled: OrderedDict[int, bool] = OrderedDict()
        #: the last tag :meth:`delivered` saw, and whether every tag up to it was seen: a
        #: multiple ack would settle a delivery never seen (and never finished) otherwise
        self._last_delivered = 0
        self._contiguous = True
        self._waiting = 0  #: how many of them are finished
        self._lock = threading.Lock()
        self._flusher = DelayedFlush(self.flush, delay, name="django_tq-amqp-acks", log=logger)

    @property
    def waiting(self) -> int:
        """Return how many acks wait to be sent."""
        return self._waiting

    def delivered(self, tag: int) -> None:
        """Note a delivery handed to the consumer (unfinished until :meth:`ack`)."""
        with self._lock:
            if tag != self._last_delivered + 1 and self._contiguous:
                # Not seen: a delivery the consumer never got. No multiple ack on this channel
                # from now on (it could cover that one); each ack goes alone.
                logger.debug(
                    "Delivery tag %s after %s: acking one by one", tag, self._last_delivered
                )
                self._contiguous = False
            self._last_delivered = tag
            self._unsettled[tag] = False

    def ack(self, tag: int, *, now: bool = False) -> None:
        """Ack ``tag``: within ``delay`` seconds, or before this returns if ``now``."""
        with self._lock:
            if tag not in self._unsettled:  # not seen by delivered(): nothing to batch it with
                self._channel.basic_ack(tag)
                return
            self._unsettled[tag] = True
            self._waiting += 1
            if now or self._waiting >= self.batch:
                self._send()
                return
        self._flusher.poke()

    def settled(self, tag: int) -> None:
        """Forget ``tag``, settled otherwise (``basic.reject`` sent already)."""
        with self._lock:
            if self._unsettled.pop(tag, False):
                self._waiting -= 1

    def flush(self) -> None:
        """Send every waiting ack now."""
        if self._waiting:
            with self._lock:
                self._send()

    def close(self) -> None:
        """Stop the flusher thread (call :meth:`flush` first to send what waits)."""
        self._flusher.close()

    def _send(self) -> None:
        """Send the waiting acks (the lock held): one multiple ack for the finished prefix,
        one ack each for finished deliveries behind an unfinished one."""
        if not self._waiting:
            return
        unsettled = self._unsettled
        last = None
        if self._contiguous:
            while unsettled:
                tag = next(iter(unsettled))
                if not unsettled[tag]:
                    break
                del unsettled[tag]
                last = tag
        alone = [tag for tag, finished in unsettled.items() if finished]
        for tag in alone:
            del unsettled[tag]
        self._waiting = 0
        # bookkeeping first: a failed write leaves the connection broken, and RabbitMQ
        # redelivers everything unacked when it drops (the consumer reconnects)
        if last is not None:
            self._channel.basic_ack(last, multiple=True)
        for tag in alone:
            self._channel.basic_ack(tag)
