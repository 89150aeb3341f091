"""What RabbitMQ took off a quorum queue at its delivery limit: run it again, or keep it dead.

RabbitMQ's count of a quorum-queue message grows with every return, also of messages a crashing
child had only prefetched, so the messages in ``<queue>.delivery-limit``
(:mod:`django_tq.broker.delivery_limit`) are a mix of poison and innocent neighbours. The result
row tells them apart, as the consumer's own count does (``redelivery.count_deliveries``): a task
whose recorded runs died ``MAX_DELIVERIES`` times, or whose runs are not recorded at all
(``ignore_result``, ``track_started=False``, no result row), becomes a ``DeadLetter`` with the
reason "delivery limit" and its result ``DEAD``; any other goes back on its queue as a new
message.
Every start counts on the row, so a poison message goes back at most ``MAX_DELIVERIES`` times; a
copy of a task that finished meanwhile is skipped by the consumer as any copy is.

The worker's parent runs :meth:`DeliveryLimitRescue.tick` in its housekeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import close_old_connections

from django_tq import message as wire_format
from django_tq import states
from django_tq.broker import Broker
from django_tq.broker import delivery_limit as dead_letters
from django_tq.broker.delivery import Delivery
from django_tq.conf import tq_settings
from django_tq.registry import registry
from django_tq.result_backends import get_backend
from django_tq.worker.dead_letter import dead_letter
from django_tq.worker.redelivery import records_starts

logger = logging.getLogger("django_tq.worker")

#: seconds between two reads of the ``.delivery-limit`` queues
INTERVAL = 1.0


class DeliveryLimitRescue:
    """Read back the messages RabbitMQ dead-lettered at the delivery limit of ``queues``."""

    def __init__(self, broker: Broker, queues: Iterable[str], *, hostname: str) -> None:
        self.hostname = hostname
        self.queues = dead_letters.DeliveryLimitQueues(broker, queues)
        self._next = 0.0

    def tick(self, now: float) -> int:
        """Settle what waits (every :data:`INTERVAL` seconds); return how many messages."""
        if now < self._next:
            return 0
        self._next = now + INTERVAL
        taken = self.queues.take()
        try:
            for delivery in taken:
                self.settle(delivery)
        except Exception:
            self.queues.close()  # what is not settled goes back to its .delivery-limit queue
            raise
        return len(taken)

    def settle(self, delivery: Delivery) -> None:
        """Republish ``delivery`` or dead-letter it (see the module's docstring); then ack it."""
        reason = self.dead_reason(delivery)
        if reason is None:
            self.queues.republish(delivery)
            logger.warning(
                "RabbitMQ took %s off quorum queue %r at its delivery limit, but it had not "
                "run out its MAX_DELIVERIES (prefetched by crashing children?): published it again",
                wire_format.read_id(delivery.headers) or "(no id)",
                delivery.queue,
            )
        else:
            dead_letter(delivery, reason, worker=self.hostname)
        delivery.ack()

    def dead_reason(self, delivery: Delivery) -> str | None:
        """Return why ``delivery`` is dead, or ``None`` when it should run again."""
        headers = delivery.headers
        limit = int(tq_settings.MAX_DELIVERIES)
        why = dead_letters.death_reason(headers)
        prefix = (
            f"delivery limit: RabbitMQ took it off quorum queue {delivery.queue!r} after more "
            f"than {limit} returns (x-delivery-limit)"
        )
        if why != "delivery_limit":  # no other reason is configured; kept, never run blind
            return f"{prefix}; dead-lettered for {why or 'no reason given'}"
        task_id = wire_format.read_id(headers)
        name = headers.get("task")
        task = registry.get(name) if isinstance(name, str) and name in registry else None
        if not task_id or task is None:
            return f"{prefix}; not a task this worker knows"
        counted = records_starts(
            task,
            ignore_result=bool(headers.get("ignore_result")),
            track_started=bool(tq_settings.TRACK_STARTED),
        )
        try:
            data = get_backend().get(task_id) if counted else None
        except Exception:
            close_old_connections()
            raise  # the housekeeping step backs off; the message waits unacked
        if data is None:  # a poison message would come back for ever
            return f"{prefix}; its runs are not recorded, so it may be killing its worker"
        if data.state == states.STARTED and max(data.delivery_count, 1) >= limit:
            return (
                f"{prefix}; it started {max(data.delivery_count, 1)} times without finishing "
                f"(MAX_DELIVERIES is {limit}): it may be killing its worker"
            )
        return None

    def close(self) -> None:
        """Close the connection."""
        self.queues.close()
