"""Messages waiting for their ETA outside every worker: in the parking table and in the store.

``tqinspect scheduled`` asks the workers what they hold until an ETA — on RabbitMQ, where a
delayed message is delivered at once, its consumer holds it. On ``django://`` and ``redis://`` a
delayed message waits in the store instead (the queue table's ``not_before``, Redis' delayed
set), and on every transport one due further away than ``ETA_HORIZON_SECONDS`` waits in the
parking table. :func:`scheduled` lists those, soonest first, described as the workers describe
what they hold.
"""

from __future__ import annotations

import base64
from typing import Any

from django.db import router

from django_tq import message as wire_format
from django_tq.broker import Broker, get_broker
from django_tq.conf import tq_settings
from django_tq.exceptions import DecodeError
from django_tq.models import ParkedMessage

#: messages listed at most (the soonest)
LIMIT = 100


def scheduled(*, broker: Broker | None = None, limit: int = LIMIT) -> list[dict[str, Any]]:
    """Return up to ``limit`` messages waiting for their ETA in no worker, soonest first.

    Each is ``{id, name, args, kwargs, queue, priority, eta, where}``; ``where`` is ``"parked"``
    (the parking table) or ``"queue"`` (the store's delayed messages).
    """
    alias = router.db_for_read(ParkedMessage) or "default"
    parked = ParkedMessage.objects.using(alias).order_by("due_at")[:limit]
    items = [
        _describe(
            row.queue,
            row.headers,
            row.body,
            row.content_type,
            where="parked",
            eta=row.due_at.isoformat(),
        )
        for row in parked
    ]
    for queue, envelope in (broker or get_broker()).delayed(limit):
        body = envelope.get("body", "")
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        eta = envelope.get("properties", {}).get("not_before")
        items.append(
            _describe(
                queue,
                envelope.get("headers"),
                body,
                envelope.get("content-type", ""),
                where="queue",
                eta=eta,
            )
        )
    items.sort(key=lambda item: str(item["eta"] or ""))
    return items[:limit]


def _describe(
    queue: str, headers: Any, body: str | bytes, content_type: str, *, where: str, eta: str | None
) -> dict[str, Any]:
    try:
        message = wire_format.decode(
            headers, body, content_type, queue=queue, accept=list(tq_settings.ACCEPT_CONTENT)
        )
    except (DecodeError, ValueError, TypeError):  # described by its headers: never decoded here
        known = headers if isinstance(headers, dict) else {}
        return {
            "id": wire_format.read_id(known),
            "name": str(known.get("task")),
            "args": "?",
            "kwargs": "?",
            "queue": queue,
            "priority": None,
            "eta": eta,
            "where": where,
        }
    return {
        "id": message.id,
        "name": message.task,
        "args": wire_format.shorten(list(message.args)),
        "kwargs": wire_format.shorten(message.kwargs),
        "queue": queue,
        "priority": message.priority,
        "eta": eta or (message.eta.isoformat() if message.eta else None),
        "where": where,
    }
