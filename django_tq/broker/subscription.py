"""A consumer's open connection to the broker: deliveries in, leases renewed, messages given back.

On RabbitMQ the connection negotiates ``BROKER_HEARTBEAT``: a consumer cut off from the broker
(a partition, not a closed socket) stays silent, and the broker closes its connection after
about that many seconds, redelivering what it held unacked to other consumers. The consumer
sends its heartbeats from two places: :meth:`Subscription.drain` (its loop, between tasks) and
:meth:`Subscription.renew_leases` (the lease keeper's thread, while a task runs — py-amqp
serialises frame writes), so a task longer than the heartbeat does not lose its connection. It
checks the broker's heartbeats only in ``drain``, after reading what arrived: nobody reads the
socket while a task runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kombu import Consumer

from django_tq.broker.amqp_acks import AckWindow
from django_tq.broker.amqp_reads import FrameReader
from django_tq.broker.delivery import Delivery

if TYPE_CHECKING:
    from django_tq.broker import Broker

logger = logging.getLogger("django_tq.broker")

#: seconds between two checks of the broker's heartbeats (``drain``; BROKER_HEARTBEAT is seconds)
HEARTBEAT_CHECK_INTERVAL = 0.25
#: RabbitMQ: the longest an ack waits to go out with others (``ack_batch_seconds``; 0: at once)
ACK_BATCH_SECONDS = 0.05


class Subscription:
    """A consumer's open connection: drain deliveries, renew leases, give messages back."""

    def __init__(
        self,
        broker: Broker,
        queues: list[str],
        prefetch: int,
        on_delivery: Callable[[Delivery], None],
        *,
        accept_celery: bool = False,
    ) -> None:
        self.broker = broker
        #: also read Celery producers' messages where the transport keeps them apart (redis://)
        self.accept_celery = accept_celery
        self.queue_names = queues
        self.prefetch = prefetch
        self.on_delivery = on_delivery
        self.connection: Any = None
        self.consumer: Any = None
        self._qos_global = False
        self._queue_of_tag: dict[Any, str] = {}
        #: RabbitMQ: acks sent in batches (``ack_batch_seconds`` > 0; see ``amqp_acks.py``)
        self.acks: AckWindow | None = None
        self._ack_batch_seconds = (
            float(broker.transport_options.get("ack_batch_seconds", ACK_BATCH_SECONDS) or 0)
            if broker.is_amqp
            else 0.0
        )
        #: RabbitMQ: the consuming connection's frames, read in chunks (``amqp_reads.py``)
        self.frames: FrameReader | None = None
        self._next_heartbeat_check = 0.0
        self.connect()

    def connect(self) -> None:
        """Open (or reopen) the connection and start consuming."""
        self.close()
        heartbeat = self.broker.heartbeat if self.broker.is_amqp else 0.0
        connection = self.broker.connection(heartbeat=heartbeat)
        connection.ensure_connection(max_retries=1)
        channel = connection.default_channel
        if self.accept_celery and hasattr(channel, "adopt_celery"):
            channel.adopt_celery = True
        queues = [self.broker.queue(name) for name in self.queue_names]
        if self.broker.is_amqp:  # declared apart: a queue Celery made first is used as it is
            for name in self.queue_names:
                self.broker.declare_queue(connection, name)
        # on_message gets the raw message: kombu must not decode bodies (we do, with our accept list)
        consumer = Consumer(
            channel,
            queues=queues,
            on_message=self._on_message,
            no_ack=False,
            auto_declare=not self.broker.is_amqp,
        )
        # RabbitMQ applies a changed per-consumer prefetch only to new consumers; a channel-wide
        # one can be widened live (what widen_prefetch needs). Same choice as Celery. Quorum
        # queues refuse a channel-wide prefetch: there held ETA messages count in the window.
        self._qos_global = not connection.qos_semantics_matches_spec and not any(
            self.broker.is_quorum(name) for name in self.queue_names
        )
        consumer.qos(prefetch_count=self.prefetch, apply_global=self._qos_global)
        consumer.consume()
        # which queue a delivery came from: RabbitMQ says the consumer tag, not the queue (kombu
        # keeps queue name -> tag in ``_active_tags``, unchanged since kombu 3)
        self._queue_of_tag = {tag: name for name, tag in consumer._active_tags.items()}
        if self.broker.is_amqp:
            self.frames = FrameReader(connection.connection)
        if self._ack_batch_seconds > 0:
            # half the window: the other half arrives while this half runs
            self.acks = AckWindow(channel, batch=self.prefetch // 2, delay=self._ack_batch_seconds)
        self.connection, self.consumer = connection, consumer

    def _on_message(self, message: Any) -> None:
        acks = self.acks
        if acks is not None:  # first: a multiple ack must never cover a delivery not seen
            acks.delivered(message.delivery_tag)
        info = message.delivery_info
        # the routing key names the queue only when the message came by its name, not an exchange
        queue = (
            info.get("queue")
            or self._queue_of_tag.get(info.get("consumer_tag"))
            or info.get("routing_key")
            or self.queue_names[0]
        )
        self.on_delivery(Delivery(message, queue, acks=acks))

    def widen_prefetch(self, extra: int) -> None:
        """Allow ``extra`` messages beyond the prefetch window (held ETA messages do not count)."""
        if self.consumer is not None:
            self.consumer.qos(prefetch_count=self.prefetch + extra, apply_global=self._qos_global)

    def drain(self, timeout: float) -> None:
        """Deliver available messages to ``on_delivery``; wait up to ``timeout`` for one.

        Batched acks (RabbitMQ) go out first when nothing has arrived: the consumer is about
        to wait, and RabbitMQ sends more only once the window has room.
        """
        frames = self.frames
        if frames is None:
            self._drain_events(timeout)
        elif not frames.read_buffered():  # nothing whole buffered: read the socket
            acks = self.acks
            if acks is not None and acks.waiting and not frames.has_input():
                acks.flush()
            self._drain_events(timeout)
        # after reading: frames that came while a task ran count as the broker's heartbeats
        now = time.monotonic()
        if now >= self._next_heartbeat_check:  # not after every message: heartbeats are seconds
            self._next_heartbeat_check = now + HEARTBEAT_CHECK_INTERVAL
            self.connection.heartbeat_check()  # a silent broker: raises a connection error

    def _drain_events(self, timeout: float) -> None:
        try:
            self.connection.drain_events(timeout=timeout)
        except TimeoutError:
            pass

    @property
    def channel(self) -> Any:
        """Return the consuming channel."""
        return self.consumer.channel if self.consumer is not None else None

    @property
    def supports_leases(self) -> bool:
        """Return whether the transport leases messages (``django://``, ``redis://``)."""
        return hasattr(self.channel, "renew_leases")

    def renew_leases(self) -> int:
        """Extend the leases of every message held; return how many (0 without leases).

        On RabbitMQ with a heartbeat: send one, so that the broker keeps the connection.
        """
        if self.supports_leases:
            return int(self.channel.renew_leases())
        connection = self.connection
        # ``connected`` first: on a connection the loop closed, ``.connection`` would reconnect
        if connection is not None and connection.heartbeat and connection.connected:
            connection.connection.send_heartbeat()
        return 0

    def buffered(self) -> list[Delivery]:
        """Return the messages claimed ahead and not delivered yet (leased transports).

        AMQP's prefetched messages wait unread in the connection: none are listed.
        """
        channel = self.channel
        if channel is None or not self.supports_leases:
            return []
        return [
            Delivery(channel.Message(raw, channel=channel), queue)
            for queue, raw in channel.buffered()
        ]

    def release_unstarted(self) -> int:
        """Give back messages prefetched but not delivered yet (warm shutdown)."""
        if self.supports_leases:
            return int(self.channel.release_buffered())
        return 0

    def flush_acks(self) -> None:
        """Send the batched acks now (RabbitMQ; a no-op elsewhere)."""
        if self.acks is not None:
            self.acks.flush()

    def close(self) -> None:
        """Send the batched acks, then close the connection; messages held and not acked go
        back to the queue."""
        acks, self.acks = self.acks, None
        if acks is not None:
            acks.close()
            try:
                acks.flush()
            except Exception:  # a dead connection: RabbitMQ redelivers what was not acked
                logger.debug("sending the batched acks failed", exc_info=True)
        self.frames = None
        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:  # closing a dead connection may raise anything
                logger.debug("closing the consumer connection failed", exc_info=True)
        self.connection, self.consumer = None, None
