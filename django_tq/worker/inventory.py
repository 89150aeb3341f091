"""What a consumer holds and is not running yet, told to its worker's parent when it asks.

``tqinspect reserved`` lists the messages a consumer holds to run next: claimed ahead in its
prefetch window (leased transports) or waiting for a rate-limit token; ``tqinspect scheduled``
those waiting for their ETA. They live in the consumer's memory: :func:`answer` describes them
(in a prefork child, on the thread that :meth:`~django_tq.worker.pool.Slot.serve` starts), as
JSON no longer than the slot's shared memory; :func:`read` turns an answer back into lists.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any

from django_tq import message as wire_format
from django_tq.broker.delivery import Delivery
from django_tq.exceptions import DecodeError
from django_tq.message import TaskMessage

if TYPE_CHECKING:
    from django_tq.worker.consumer import Consumer


def _epoch_iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def _described(message: TaskMessage, delivery: Delivery, **extra: Any) -> dict[str, Any]:
    return {
        "id": message.id,
        "name": message.task,
        "args": wire_format.shorten(list(message.args)),
        "kwargs": wire_format.shorten(message.kwargs),
        "queue": delivery.queue,
        "priority": message.priority,
        "delivery_count": delivery.delivery_count,
        **extra,
    }


def _claimed(delivery: Delivery, accept: list[str]) -> dict[str, Any]:
    """Describe a claimed message not decoded yet (one that does not decode: its headers)."""
    try:
        message = wire_format.decode(
            delivery.headers,
            delivery.body,
            delivery.content_type,
            queue=delivery.queue,
            accept=accept,
        )
    except (DecodeError, ValueError, TypeError):
        headers = delivery.headers
        return {
            "id": wire_format.read_id(headers),
            "name": str(headers.get("task")) if isinstance(headers, dict) else None,
            "args": "?",
            "kwargs": "?",
            "queue": delivery.queue,
            "priority": delivery.priority,
            "delivery_count": delivery.delivery_count,
        }
    return _described(message, delivery)


def holdings(consumer: Consumer, now: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """Return what ``consumer`` holds: ``reserved`` (next first) and ``scheduled`` (by ETA).

    Safe from another thread: every collection is copied in one step before it is read.
    """
    now = time.time() if now is None else now
    subscription = consumer.subscription
    reserved = [
        _claimed(delivery, consumer.accept)
        for delivery in (subscription.buffered() if subscription is not None else [])
    ]
    reserved += [
        _described(message, delivery, rate_limited_until=_epoch_iso(due))
        for due, _, delivery, message in sorted(list(consumer.holding.throttled))
    ]
    scheduled = []
    for due, _, delivery, message in sorted(list(consumer.holding.held)):
        if message.eta is not None and message.eta.timestamp() > now:
            scheduled.append(_described(message, delivery, eta=message.eta.isoformat()))
        else:  # back through the rate limiter when due (it could not reserve a token)
            reserved.append(_described(message, delivery, rate_limited_until=_epoch_iso(due)))
    return {"reserved": reserved, "scheduled": scheduled}


def answer(consumer: Consumer, limit: int) -> bytes:
    """Return :func:`holdings` as JSON of at most ``limit`` bytes (the last entries left off,
    and counted in ``left_off``)."""
    held = holdings(consumer)
    left_off = 0
    while True:
        encoded = json.dumps({**held, "left_off": left_off}, default=str).encode()
        if len(encoded) <= limit:
            return encoded
        longest = max(held, key=lambda kind: len(held[kind]))
        if not held[longest]:
            return b"{}"  # cannot happen with a limit of a few KiB: nothing sensible fits
        cut = max(1, len(held[longest]) // 4)  # a few rounds, never one per entry
        held[longest] = held[longest][:-cut]
        left_off += cut


def read(raw: bytes) -> dict[str, Any]:
    """Return an answer of :func:`answer` as a dict (``{}`` for one that does not parse)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
