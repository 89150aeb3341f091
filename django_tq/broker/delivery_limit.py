"""A quorum queue's messages past its delivery limit: where RabbitMQ puts them, how to read them back.

RabbitMQ counts every return of a quorum-queue message — a requeue, and every message a consumer
whose channel closed held unacked, prefetched ones included — and takes a message returned more
than ``x-delivery-limit`` times off the queue. Without a dead-letter exchange it *drops* it: an
innocent task that a child had only prefetched each time it crashed would vanish with no result
and no dead letter. So each quorum queue ``q`` is declared with :data:`EXCHANGE` as its
dead-letter exchange and ``q`` as the routing key, which reaches the quorum queue
``q.delivery-limit``. The ``at-least-once`` strategy keeps the message in ``q`` until
``q.delivery-limit`` has confirmed it (RabbitMQ requires ``x-overflow: reject-publish`` for it;
with no length limit that changes nothing else). The worker's housekeeping reads the messages
back with :class:`DeliveryLimitQueues` and decides (``worker/delivery_limit.py``).

A queue's arguments are fixed when it is created: quorum queues an earlier django_tq declared
without a dead-letter exchange are named in ``BROKER_TRANSPORT_OPTIONS["legacy_quorum_queues"]``
and get the same exchange from a RabbitMQ policy (:func:`policy_definition`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kombu import Exchange, Queue

from django_tq.broker.confirms import Confirms
from django_tq.broker.delivery import Delivery
from django_tq.exceptions import PublishError

if TYPE_CHECKING:
    from django_tq.broker import Broker

logger = logging.getLogger("django_tq.broker")

#: the dead-letter exchange of every quorum queue (direct: the key is the quorum queue's name)
EXCHANGE = "django_tq.delivery-limit"
#: ``<queue><SUFFIX>`` holds what RabbitMQ took off ``<queue>`` at its delivery limit
SUFFIX = ".delivery-limit"
#: headers RabbitMQ adds to a dead-lettered message (``x-delivery-count`` counts the returns
#: from the ``.delivery-limit`` queue itself: the source queue's count is not kept)
DEATH_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)


def queue_name(source: str) -> str:
    """Return the name of the queue holding what RabbitMQ took off ``source`` at its limit."""
    return f"{source}{SUFFIX}"


def source_of(name: str) -> str | None:
    """Return the quorum queue whose ``.delivery-limit`` queue ``name`` would be, else ``None``."""
    source = name.removesuffix(SUFFIX)
    return source if source != name and source else None


def source_arguments(delivery_limit: int, source: str, *, legacy: bool = False) -> dict[str, Any]:
    """Return the arguments of the quorum queue ``source``.

    ``legacy``: the arguments of a quorum queue declared before it had a dead-letter exchange
    (the queue exists with them; declaring it with others is refused, ``PRECONDITION_FAILED``).
    """
    arguments: dict[str, Any] = {"x-queue-type": "quorum", "x-delivery-limit": delivery_limit}
    if not legacy:
        arguments.update(
            {
                "x-dead-letter-exchange": EXCHANGE,
                "x-dead-letter-routing-key": source,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",  # at-least-once is refused without it
            }
        )
    return arguments


def policy_definition(source: str) -> dict[str, str]:
    """Return the RabbitMQ policy giving the legacy quorum queue ``source`` its dead letters.

    ``rabbitmqctl set_policy --apply-to queues tq-dl-<source> '^<source>$' '<json>'``.
    """
    return {
        "dead-letter-exchange": EXCHANGE,
        "dead-letter-routing-key": source,
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
    }


def dead_letter_queue(source: str) -> Queue:
    """Return the kombu queue ``<source>.delivery-limit``: quorum (replicated), bound to
    :data:`EXCHANGE` with ``source`` as key, no delivery limit of its own."""
    return Queue(
        queue_name(source),
        Exchange(EXCHANGE, type="direct", durable=True),
        routing_key=source,
        queue_arguments={"x-queue-type": "quorum"},
        durable=True,
    )


def death_reason(headers: dict[str, Any]) -> str:
    """Return why RabbitMQ dead-lettered a message (``delivery_limit``, ``rejected``, …)."""
    return str(headers.get("x-first-death-reason") or "")


class DeliveryLimitQueues:
    """One connection reading the ``.delivery-limit`` queues of some quorum queues back.

    :meth:`take` hands out what waits there as :class:`Delivery` objects (their ``queue`` is
    the quorum queue they came from); :meth:`republish` puts one back on its quorum queue,
    confirmed, before the caller acks it — a crash in between leaves a copy, never a loss.
    """

    def __init__(self, broker: Broker, sources: Iterable[str], *, timeout: float = 5.0) -> None:
        self.broker = broker
        self.sources = tuple(sources)
        self.timeout = timeout
        self._connection: Any = None
        self._channel: Any = None
        self._confirms: Confirms | None = None
        #: the queues a republish was returned from since the last publish (none took it)
        self._returned: list[str] = []

    def _open(self) -> Any:
        if self._channel is None:
            connection = self.broker.connection()
            connection.ensure_connection(max_retries=1)
            channel = connection.channel()
            self._connection, self._channel = connection, channel
            self._confirms = Confirms(connection.channel())  # its own numbering
            self._confirms.channel.events["basic_return"].add(self._on_return)
            for source in self.sources:
                # the source first: one an earlier version declared differently is refused
                # here, with RabbitMQ's reason, instead of in every consumer
                self.broker.queue(source)(channel).declare()
                dead_letter_queue(source)(channel).declare()
        return self._channel

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        # a mandatory republish no queue took: ``routing_key`` is its quorum queue's name
        self._returned.append(routing_key)

    def take(self, limit: int = 100) -> list[Delivery]:
        """Return up to ``limit`` messages RabbitMQ took off the sources, unacked."""
        taken: list[Delivery] = []
        try:
            channel = self._open()
            for source in self.sources:
                kombu_queue = dead_letter_queue(source)(channel)
                while len(taken) < limit:
                    message = kombu_queue.get(no_ack=False)
                    if message is None:
                        break
                    taken.append(Delivery(message, source))
        except Exception:
            self.close()  # the next call opens a fresh connection
            raise
        return taken

    def republish(self, delivery: Delivery) -> None:
        """Put ``delivery`` back on its quorum queue as a new message (RabbitMQ's count is 0).

        Its headers lose RabbitMQ's ``x-death``/``x-delivery-count``; kombu decompressed the
        body on receipt, so it goes back uncompressed. Raise when RabbitMQ does not confirm it.

        The publish is mandatory: RabbitMQ acks a message no queue takes, so a quorum queue
        deleted since the worker declared it would have dropped it. Returned, it is declared
        again (as a worker's consumer would) and published once more; returned again, this
        raises and the message stays in ``<queue>.delivery-limit`` for the next read.
        """
        try:
            self._open()
            confirms = self._confirms
            assert confirms is not None
            headers = {
                key: value
                for key, value in delivery.headers.items()
                if key not in DEATH_HEADERS and key != "compression"
            }
            body = delivery.body
            message = confirms.channel.prepare_message(
                body,
                content_type=delivery.content_type,
                content_encoding="utf-8" if isinstance(body, str) else "binary",
                headers=headers,
                properties={"delivery_mode": 2},
            )
            label = str(headers.get("id") or "")
            for attempt in range(2):
                self._returned.clear()
                confirms.publish(label, message, routing_key=delivery.queue, mandatory=True)
                if confirms.wait(self.timeout):
                    raise PublishError(
                        f"RabbitMQ refused (nack) {label!r} back on {delivery.queue!r}",
                        failed=[label],
                    )
                if delivery.queue not in self._returned:
                    return
                if attempt == 0:
                    logger.warning(
                        "Quorum queue %r is gone (deleted since it was declared?): declaring it "
                        "again to put %s back on it",
                        delivery.queue,
                        label or "(no id)",
                    )
                    self._declare_source(delivery.queue)
            raise PublishError(
                f"RabbitMQ routed {label!r} to no queue named {delivery.queue!r}: it stays in "
                f"{queue_name(delivery.queue)!r}",
                failed=[label],
            )
        except Exception:
            self.close()
            raise

    def _declare_source(self, source: str) -> None:
        self.broker.queue(source)(self._open()).declare()

    def close(self) -> None:
        """Drop the connection (unacked messages go back to their ``.delivery-limit`` queue)."""
        connection, self._connection, self._channel, self._confirms = (
            self._connection,
            None,
            None,
            None,
        )
        if connection is not None:
            try:
                connection.release()
            except Exception:
                logger.debug("closing the delivery-limit connection failed", exc_info=True)
