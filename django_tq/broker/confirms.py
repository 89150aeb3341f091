"""Publisher confirms of one AMQP channel, waited for once per burst instead of once per message.

After ``confirm.select`` RabbitMQ numbers the messages published on the channel 1, 2, 3, … and
answers each with ``basic.ack`` or ``basic.nack`` (``multiple`` settles every number up to the
one given). :class:`Confirms` publishes a burst without waiting, remembers which message each
number is, and then reads the channel until every number of the burst is settled: one wait for
the burst, however many messages it holds. py-amqp's own ``confirm_publish`` waits after every
message; this channel never uses it (the numbering would no longer be ours).

A message published with a :class:`Late` (``BROKER_CONFIRM="batch"``) is waited for by nobody:
its confirm is read later, by :mod:`~.late_confirms`' thread or by any wait on the channel,
and a nack, a timeout or a lost connection hands it to its ``on_failure``. Every read and write
of the channel holds :attr:`Confirms.lock`, so the two threads never interleave on the socket.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import amqp
from amqp import serialization, spec
from amqp.exceptions import FrameSyntaxError, RecoverableConnectionError

from django_tq.exceptions import PublishError
from django_tq.outgoing import Outgoing

_pack_B = struct.Struct("B").pack
_pack_H = struct.Struct(">H").pack
_pack_I = struct.Struct(">I").pack
_pack_S = struct.Struct(">cI").pack
_pack_i = struct.Struct(">ci").pack
_pack_q = struct.Struct(">cq").pack
_pack_d = struct.Struct(">cd").pack


def encode_table(table: dict[Any, Any]) -> bytes:
    """Return ``table`` as an AMQP field table: the bytes py-amqp's ``_write_table`` writes.

    py-amqp writes each item through a BytesIO and ``isinstance`` checks; a message's headers
    (strings, numbers, ``None``, lists) here take a quarter of that, and any other type is
    written by py-amqp's own ``_write_item``.
    """
    parts: list[bytes] = []
    for key, value in table.items():
        name = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
        parts.append(_pack_B(len(name)))
        parts.append(name)
        try:
            _encode_item(value, parts)
        except ValueError:
            raise FrameSyntaxError(
                serialization.ILLEGAL_TABLE_TYPE_WITH_KEY.format(type(value), name, value)
            ) from None
    data = b"".join(parts)
    return _pack_I(len(data)) + data


def _encode_item(value: Any, parts: list[bytes]) -> None:
    cls = value.__class__
    if cls is str:
        data = value.encode("utf-8", "surrogatepass")
        parts.append(_pack_S(b"S", len(data)))
        parts.append(data)
    elif value is None:
        parts.append(b"V")
    elif cls is bool:
        parts.append(b"t\x01" if value else b"t\x00")
    elif cls is int:
        if value > 2147483647 or value < -2147483647:
            parts.append(_pack_q(b"L", value))
        else:
            parts.append(_pack_i(b"I", value))
    elif cls is float:
        parts.append(_pack_d(b"d", value))
    elif cls is dict:
        parts.append(b"F")
        parts.append(encode_table(value))
    elif cls is list or cls is tuple:
        items: list[bytes] = []
        for item in value:
            try:
                _encode_item(item, items)
            except ValueError:
                raise FrameSyntaxError(
                    serialization.ILLEGAL_TABLE_TYPE_WITH_VALUE.format(type(item), item)
                ) from None
        data = b"".join(items)
        parts.append(b"A")
        parts.append(_pack_I(len(data)))
        parts.append(data)
    else:  # bytes, Decimal, datetime, subclasses: as py-amqp writes them (ValueError: illegal)
        out = BytesIO()
        serialization._write_item(value, out.write, [])
        parts.append(out.getvalue())


class Message(amqp.Message):
    """py-amqp's message, whose content header is serialized with :func:`encode_table`.

    The same bytes as py-amqp's ``GenericContent._serialize_properties`` (the property flags,
    then the set properties in order; basic properties have no bit fields to pack, so each one
    is written on its own: short strings, octets and the table here, the rest by py-amqp).
    """

    def _serialize_properties(self) -> bytes:
        props = self.properties
        shift = 15
        flag_bits = 0
        flags: list[int] = []
        chunks: list[bytes] = []
        for key, proptype in self.PROPERTIES:
            value = props.get(key, None)
            if value is not None:
                if shift == 0:
                    flags.append(flag_bits)
                    flag_bits = 0
                    shift = 15
                flag_bits |= 1 << shift
                if proptype == "s" and value.__class__ is str:  # shortstr
                    data = value.encode("utf-8", "surrogatepass")
                    chunks.append(_pack_B(len(data)))
                    chunks.append(data)
                elif proptype == "o" and value.__class__ is int:  # octet
                    chunks.append(_pack_B(value))
                elif proptype == "F":
                    chunks.append(encode_table(value))
                elif proptype != "bit":
                    chunks.append(serialization.dumps(proptype, [value]))
            shift -= 1
        flags.append(flag_bits)
        return b"".join([_pack_H(bits) for bits in flags]) + b"".join(chunks)


class ConfirmTimeout(Exception):
    """Some messages of a burst were neither acked nor nacked in time."""

    def __init__(self, unsettled: list[str]) -> None:
        super().__init__(f"{len(unsettled)} message(s) not confirmed in time")
        self.unsettled = unsettled


#: what a late message that fails is handed to: the message, and why the broker did not take it
OnLateFailure = Callable[[Outgoing, PublishError], None]


@dataclass(frozen=True, slots=True)
class Late:
    """A published message whose confirm nobody waits for: what to do if it never comes good."""

    item: Outgoing
    #: called in the collecting thread
    on_failure: OnLateFailure
    #: ``time.monotonic()`` after which a missing confirm is a failure
    deadline: float


#: a late message that failed, and why
Failure = tuple[Late, PublishError]


@dataclass(slots=True)
class _Entry:
    label: str
    late: Late | None = None


class Confirms:
    """The confirm numbering of one py-amqp channel in confirm mode."""

    def __init__(self, channel: Any, *, url: str = "the broker") -> None:
        self.channel = channel
        self.url = url
        #: held around every read and write of the channel (the publisher's and the collector's)
        self.lock = threading.RLock()
        if not channel._confirm_selected:
            channel._confirm_selected = True
            channel.confirm_select()
        self._next_tag = 1
        #: (exchange, routing key, mandatory) -> ``basic.publish``'s encoded arguments
        self._publish_arguments: dict[tuple[str, str, bool], bytes] = {}
        #: delivery tag -> message published and not settled yet (in tag order)
        self._unsettled: dict[int, _Entry] = {}
        #: how many of them are late (nobody waits for them)
        self._late = 0
        self._nacked: list[str] = []
        #: late messages that failed since the last :meth:`take_failures`
        self._failures: list[Failure] = []
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)

    def publish(
        self,
        label: str,
        message: Any,
        *,
        exchange: str = "",
        routing_key: str,
        late: Late | None = None,
        mandatory: bool = False,
    ) -> None:
        """Write ``message`` to ``exchange`` (``""``: the default one) without waiting for its confirm.

        ``basic.publish`` sent as py-amqp's ``basic_publish`` sends it, minus its non-blocking
        read before every message (for ``connection.blocked``): :meth:`wait` reads once per
        burst. The method's arguments are encoded once per exchange and key. The caller holds
        :attr:`lock` and bounds the writes (``transport.having_timeout``).
        ``late``: nobody will :meth:`wait` for this one (see the module docstring).
        ``mandatory``: RabbitMQ sends a message no queue takes back (``basic.return``, before
        its ack: an unroutable message is acked too) to the channel's ``basic_return`` handlers.
        """
        key = (exchange, routing_key, mandatory)
        arguments = self._publish_arguments.get(key)
        if arguments is None:
            if len(self._publish_arguments) >= 1024:
                self._publish_arguments.clear()
            arguments = self._publish_arguments[key] = serialization.dumps(
                "Bssbb", (0, exchange, routing_key, mandatory, False)
            )
        connection = self.channel.connection
        if connection is None:
            raise RecoverableConnectionError("connection already closed")
        try:  # what ``send_method`` does, with the method's arguments encoded once per target
            connection.frame_writer(
                1, self.channel.channel_id, spec.Basic.Publish, arguments, message
            )
        except StopIteration:
            raise RecoverableConnectionError("connection already closed") from None
        self._unsettled[self._next_tag] = _Entry(label, late)
        self._next_tag += 1
        if late is not None:
            self._late += 1

    def wait(self, timeout: float) -> list[str]:
        """Read until every waited-for message is settled; return the labels of the nacked ones.

        Raise :class:`ConfirmTimeout` (with the unsettled labels) after ``timeout`` seconds, and
        the connection's own errors when it closes meanwhile. Late messages are not waited for
        (their confirms are settled on the way).
        """
        deadline = time.monotonic() + timeout
        connection = self.channel.connection
        with self.lock:
            while len(self._unsettled) > self._late:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConfirmTimeout(self.unsettled())
                try:
                    connection.drain_events(timeout=remaining)
                except TimeoutError:
                    continue
            nacked, self._nacked = self._nacked, []
        return nacked

    def collect(self) -> None:
        """Settle every confirm that has arrived, without waiting for more (the collector's read)."""
        connection = self.channel.connection
        with self.lock:
            while self._unsettled:
                try:
                    connection.drain_events(timeout=0)
                except TimeoutError:
                    return

    @property
    def late(self) -> int:
        """Return how many late messages are not settled yet."""
        return self._late

    @property
    def idle(self) -> bool:
        """Return whether no late message waits for its confirm or for its failure's report."""
        return self._late == 0 and not self._failures

    def unsettled(self) -> list[str]:
        """Return the labels of the waited-for messages neither acked nor nacked yet."""
        return [entry.label for entry in self._unsettled.values() if entry.late is None]

    def expire(self, now: float) -> None:
        """Fail the late messages whose deadline is past (their confirm may still come: ignored)."""
        with self.lock:
            for tag, entry in list(self._unsettled.items()):
                if entry.late is not None and entry.late.deadline <= now:
                    del self._unsettled[tag]
                    self._late -= 1
                    error = PublishError(
                        f"{self.url} did not confirm {entry.label} in time",
                        failed=[entry.label],
                    )
                    self._failures.append((entry.late, error))

    def abandon(self, reason: str) -> None:
        """Fail every late message not settled yet: the channel is gone (``reason``)."""
        with self.lock:
            for tag, entry in list(self._unsettled.items()):
                if entry.late is not None:
                    del self._unsettled[tag]
                    error = PublishError(
                        f"{self.url}: {reason} before confirming {entry.label}",
                        failed=[entry.label],
                    )
                    self._failures.append((entry.late, error))
            self._late = 0

    def take_failures(self) -> list[Failure]:
        """Return (and forget) the late messages that failed so far."""
        with self.lock:
            failures, self._failures = self._failures, []
        return failures

    def _settle(self, delivery_tag: int, multiple: bool) -> list[_Entry]:
        if not multiple:
            entry = self._unsettled.pop(delivery_tag, None)
            settled = [] if entry is None else [entry]
        else:
            settled = []
            while self._unsettled:
                tag = next(iter(self._unsettled))
                if tag > delivery_tag:
                    break
                settled.append(self._unsettled.pop(tag))
        self._late -= sum(1 for entry in settled if entry.late is not None)
        return settled

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        for entry in self._settle(delivery_tag, multiple):
            if entry.late is None:
                self._nacked.append(entry.label)
            else:
                error = PublishError(
                    f"{self.url} refused (nack) {entry.label}", failed=[entry.label]
                )
                self._failures.append((entry.late, error))
