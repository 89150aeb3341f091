"""Publisher confirms of one AMQP channel, waited for once per burst instead of once per message.

After ``confirm.select`` RabbitMQ numbers the messages published on the channel 1, 2, 3, … and
answers each with ``basic.ack`` or ``basic.nack`` (``multiple`` settles every number up to the
one given). :class:`Confirms` publishes a burst without waiting, remembers which message each
number is, and then reads the channel until every number of the burst is settled: one wait for
the burst, however many messages it holds. py-amqp's own ``confirm_publish`` waits after every
message; this channel never uses it (the numbering would no longer be ours).
"""

from __future__ import annotations

import time
from typing import Any

from amqp import spec


class ConfirmTimeout(Exception):
    """Some messages of a burst were neither acked nor nacked in time."""

    def __init__(self, unsettled: list[str]) -> None:
        super().__init__(f"{len(unsettled)} message(s) not confirmed in time")
        self.unsettled = unsettled


class Confirms:
    """The confirm numbering of one py-amqp channel in confirm mode."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        if not channel._confirm_selected:
            channel._confirm_selected = True
            channel.confirm_select()
        self._next_tag = 1
        #: delivery tag -> label of a message published and not settled yet (in tag order)
        self._unsettled: dict[int, str] = {}
        self._nacked: list[str] = []
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)

    def publish(self, label: str, message: Any, *, exchange: str = "", routing_key: str) -> None:
        """Write ``message`` to ``exchange`` (``""``: the default one) without waiting for its confirm.

        ``basic.publish`` sent as py-amqp's ``basic_publish`` sends it, minus its non-blocking
        read before every message (for ``connection.blocked``): :meth:`wait` reads once per
        burst. The caller bounds the writes (``transport.having_timeout``).
        """
        self.channel.send_method(
            spec.Basic.Publish, "Bssbb", (0, exchange, routing_key, False, False), message
        )
        self._unsettled[self._next_tag] = label
        self._next_tag += 1

    def wait(self, timeout: float) -> list[str]:
        """Read until every published message is settled; return the labels of the nacked ones.

        Raise :class:`ConfirmTimeout` (with the unsettled labels) after ``timeout`` seconds, and
        the connection's own errors when it closes meanwhile.
        """
        deadline = time.monotonic() + timeout
        connection = self.channel.connection
        while self._unsettled:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfirmTimeout(self.unsettled())
            try:
                connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        nacked, self._nacked = self._nacked, []
        return nacked

    def unsettled(self) -> list[str]:
        """Return the labels of the messages neither acked nor nacked yet."""
        return list(self._unsettled.values())

    def _settle(self, delivery_tag: int, multiple: bool) -> list[str]:
        if not multiple:
            label = self._unsettled.pop(delivery_tag, None)
            return [] if label is None else [label]
        settled = []
        while self._unsettled:
            tag = next(iter(self._unsettled))
            if tag > delivery_tag:
                break
            settled.append(self._unsettled.pop(tag))
        return settled

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked.extend(self._settle(delivery_tag, multiple))
