"""One message on its way to the broker: the wire message and where it goes."""

from __future__ import annotations

from dataclasses import dataclass

from django_tq.message import WireMessage


@dataclass(frozen=True, kw_only=True, slots=True)
class Outgoing:
    """A message to publish: the wire message, its queue and delivery properties.

    A message routed through an exchange carries its route in ``wire.route`` (exchange and
    routing key): RabbitMQ routes it; a transport without exchanges stores one copy per queue
    the key reaches (``broker.exchange_emulation``), each with ``exchange`` and ``routing_key``.
    ``label`` names it in errors (the task id): a burst that fails raises a
    :class:`~django_tq.exceptions.PublishError` whose ``failed`` lists the labels the broker did
    not take.
    """

    wire: WireMessage
    queue: str
    label: str = ""
    priority: int | None = None
    not_before: str | None = None  #: ISO datetime before which no consumer may get it
    #: a copy stored by a transport without exchanges: the exchange it was routed through
    #: (the route itself is ``wire.route``), shown in its delivery info with ``routing_key``
    exchange: str | None = None
    routing_key: str | None = None
