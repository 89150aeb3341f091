"""A message handed to a consumer: headers, the raw body, its delivery count, and how to settle it.

The worker reads and settles messages only through :class:`Delivery`, never through a kombu
message, so the same code consumes from every transport.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import django_tq.broker.compression as compression
from django_tq.broker.amqp_acks import AckWindow
from django_tq.exceptions import DecodeError
from django_tq.folded_ack import FoldedAck


class Delivery:
    """One message handed to a consumer: headers, raw body, and how to settle it."""

    __slots__ = (
        "_acks",
        "_delivery_count",
        "_message",
        "_requeued",
        "acked",
        "queue",
        "received_at",
    )

    def __init__(self, message: Any, queue: str, *, acks: AckWindow | None = None) -> None:
        self._message = message
        self.queue = queue
        #: RabbitMQ: the channel's acks, sent in batches (``amqp_acks.py``); None: ack at once
        self._acks = acks
        self.received_at = time.monotonic()
        self._delivery_count: int | None = None
        #: settled by :meth:`ack`, or by a write that ran :meth:`folded_ack`'s statement
        self.acked = False
        self._requeued = False  #: given back by :meth:`requeue` or :meth:`give_back`

    @property
    def headers(self) -> dict[str, Any]:
        """Return the message headers (metadata readable even when the body is not)."""
        return self._message.headers or {}

    @property
    def body(self) -> str | bytes:
        """Return the undecoded body (decompressed already when it travelled compressed)."""
        return self._message.body

    @staticmethod
    def decompressed(headers: Any, body: str | bytes) -> str | bytes:
        """Return a stored ``body`` decompressed as ``headers`` say (``DecodeError`` if it cannot
        be). A delivered message's :attr:`body` is already: kombu decompresses on receipt."""
        try:
            return compression.decompress(headers, body)
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc

    @property
    def content_type(self) -> str:
        """Return the body's content type."""
        return self._message.content_type or ""

    @property
    def delivery_count(self) -> int:
        """Return how many times this message was delivered, this time included.

        Leased transports count in the store (a dead child's prefetched messages are not counted).
        AMQP classic queues keep no count: 2 means "redelivered at least once", unless the
        consumer counted the deliveries elsewhere and set the count.
        """
        if self._delivery_count is not None:
            return self._delivery_count
        count = self._message.properties.get("delivery_count")
        if count:
            return int(count)
        return 2 if self.redelivered else 1

    @delivery_count.setter
    def delivery_count(self, count: int) -> None:
        self._delivery_count = count

    @property
    def is_counted(self) -> bool:
        """Return whether the transport counts deliveries (leased ones do, AMQP does not)."""
        return bool(self._message.properties.get("delivery_count"))

    @property
    def redelivered(self) -> bool:
        """Return whether the broker delivered this message before."""
        return bool(self._message.delivery_info.get("redelivered"))

    @property
    def priority(self) -> int | None:
        """Return the priority the message was published with (None: the transport's default)."""
        value = self._message.properties.get("priority")
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def tag(self) -> Any:
        """Return the transport's delivery tag."""
        return self._message.delivery_tag

    @property
    def raw_payload(self) -> str:
        """Return the body as text for a dead-letter record (``base64:…`` when it is binary)."""
        body = self.body
        if isinstance(body, bytes | bytearray):
            try:
                text = bytes(body).decode("utf-8")
            except UnicodeDecodeError:
                text = "\x00"
            if "\x00" in text:
                return "base64:" + base64.b64encode(bytes(body)).decode("ascii")
            return text
        return str(body).replace("\x00", "\\x00")

    def ack(self, *, now: bool = False) -> None:
        """Settle: the message is done and never comes back.

        On RabbitMQ the ack may wait a moment to go out with others (``amqp_acks.py``): a
        crash meanwhile redelivers the message. ``now``: send it before returning (an ack
        before the task runs, which a crash must not undo).
        """
        if self._acks is not None:
            self._acks.ack(self._message.delivery_tag, now=now)
        else:
            self._message.ack()
        self.acked = True

    def folded_ack(self) -> FoldedAck | None:
        """Return this message's ack as SQL a database write can run in its own statement
        (``django://`` on PostgreSQL), else None. Its ``settled()`` marks this delivery acked."""
        fold = getattr(self._message.channel, "folded_ack", None)
        ack: FoldedAck | None = fold(self.tag) if fold is not None else None
        if ack is None:
            return None
        return replace(ack, settled=partial(self._settled, ack.settled))

    def _settled(self, transport_settled: Callable[[], None]) -> None:
        transport_settled()
        self.acked = True

    @property
    def is_settled(self) -> bool:
        """Return whether this delivery was acked or given back (through this object)."""
        return self.acked or self._requeued

    def requeue(self) -> None:
        """Put the message back on its queue at once."""
        self._message.reject(requeue=True)
        if self._acks is not None:  # after the reject: a batch sent meanwhile stops before it
            self._acks.settled(self._message.delivery_tag)
        self._requeued = True

    def give_back(self, *, counted: bool) -> None:
        """Put the message back on its queue at once, after handling it failed.

        ``counted=False``: its task never started, so a leased transport takes this delivery
        back (it does not count towards ``MAX_DELIVERIES``). AMQP keeps no count to take back.
        """
        reject_unstarted = getattr(
            getattr(self._message.channel, "qos", None), "reject_unstarted", None
        )
        if counted or reject_unstarted is None:  # AMQP, or a delivery that started its task
            self.requeue()
            return
        reject_unstarted(self.tag)  # the leased transports' QoS (transport/leased.py)
        self._requeued = True
