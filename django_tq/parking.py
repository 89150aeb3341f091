"""ETA parking: a message due later than ``ETA_HORIZON_SECONDS`` waits in a table, not in a worker.

Brokers deliver delayed messages badly: Redis' visibility timeout re-sends ETA messages held
unacked by a worker (duplicates), RabbitMQ closes channels that hold a message unacked past its
``consumer_timeout``, and every ETA message held by a worker costs its memory and prefetch
window. So :func:`park` writes a far-away message to ``ParkedMessage`` — in the caller's
transaction, like the result row — and any live worker's :func:`release_due` publishes it shortly
before it is due (``SELECT … FOR UPDATE SKIP LOCKED``: workers never release the same row twice).
"""

from __future__ import annotations

import datetime as dt

from django.db import router
from django.utils import timezone

from django_tq.broker import Broker
from django_tq.conf import tq_settings
from django_tq.message import (
    RELEASED_HEADER,
    TaskMessage,
    WireMessage,
    body_from_text,
    body_to_text,
)
from django_tq.models import ParkedMessage, TaskResult
from django_tq.sqlite import write_atomic

#: released this long before they are due (the consumer holds them the last stretch)
RELEASE_LEAD = dt.timedelta(seconds=1)


def should_park(message: TaskMessage, now: dt.datetime | None = None) -> bool:
    """Return whether ``message`` is due too far away to hand to the broker now."""
    if message.eta is None:
        return False
    horizon = dt.timedelta(seconds=tq_settings.ETA_HORIZON_SECONDS)
    return message.eta - (now or timezone.now()) > horizon


def park(message: TaskMessage, wire: WireMessage, *, using: str) -> None:
    """Write ``message`` to the parking table on alias ``using`` (the caller's transaction)."""
    assert message.eta is not None
    ParkedMessage.objects.using(using).create(
        task_id=message.id,
        task_name=message.task,
        queue=message.queue,
        priority=message.priority,
        due_at=message.eta,
        headers={**wire.headers, RELEASED_HEADER: True},
        body=body_to_text(wire.body),
        content_type=wire.content_type,
    )


def _wire(row: ParkedMessage) -> WireMessage:
    return WireMessage(
        headers=row.headers, body=body_from_text(row.body), content_type=row.content_type
    )


def release_due(broker: Broker, now: dt.datetime | None = None, *, limit: int = 200) -> int:
    """Publish parked messages due within ``RELEASE_LEAD``; return how many.

    Rows are deleted in the transaction that locked them. With ``django://`` on the same
    database the publish is in that transaction too (an exact move); with another broker a crash
    between publish and commit publishes a message twice, and the worker that gets the second
    copy skips it once the task has run (the ``released`` header).
    """
    alias = router.db_for_write(ParkedMessage) or "default"
    horizon = (now or timezone.now()) + RELEASE_LEAD
    with write_atomic(alias):  # reads, then writes: SQLite's write lock at BEGIN
        rows = list(
            ParkedMessage.objects.using(alias)
            .select_for_update(skip_locked=True)
            .filter(due_at__lte=horizon)
            .order_by("due_at", "id")[:limit]
        )
        for row in rows:
            broker.publish(
                _wire(row),
                queue=row.queue,
                priority=row.priority,
                not_before=row.due_at.isoformat(),
            )
        if rows:
            ParkedMessage.objects.using(alias).filter(pk__in=[row.pk for row in rows]).delete()
    return len(rows)


def release_now(task_ids: list[str], now: dt.datetime | None = None) -> int:
    """Make the parked messages of ``task_ids`` due ``now`` (their ETA too); return how many.

    The next live worker to check (about every half second) publishes them as if they had
    come due, and they run at once. Rows a worker is releasing right now are left alone.
    """
    now = now or timezone.now()
    alias = router.db_for_write(ParkedMessage) or "default"
    with write_atomic(alias):
        rows = list(
            ParkedMessage.objects.using(alias)
            .select_for_update(skip_locked=True)
            .filter(task_id__in=task_ids)
        )
        for row in rows:
            row.headers = {**row.headers, "eta": now.isoformat()}
            row.due_at = now
            row.save(update_fields=["headers", "due_at"])
    TaskResult.objects.filter(task_id__in=[row.task_id for row in rows]).update(eta=now)
    return len(rows)
