"""The outbox: with Redis or RabbitMQ, a message is written in the caller's transaction.

``PUBLISH_ON_COMMIT`` alone publishes from an ``on_commit`` callback: a process that dies between
the commit and the publish loses the message although its data committed. With
``TQ["OUTBOX"] = True``, :func:`write` stores the encoded message in ``OutboxMessage`` inside the
caller's transaction instead; :func:`take` publishes it right after the commit (no added latency),
and the relay every worker runs, :func:`relay`, publishes rows nobody took (``SELECT … FOR UPDATE
SKIP LOCKED``: several workers never publish the same row twice).

A row is deleted in the transaction that locked it, after the publish: a crash between the two
publishes the message a second time, and the worker that gets the copy skips it once the task
has run (a known task id that finished is never run again; relayed messages carry parking's
``released`` mark, so this holds even without ``TRACK_STARTED``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from django.conf import settings
from django.db import router
from django.utils import timezone

from django_tq.broker import Broker
from django_tq.exceptions import PublishError
from django_tq.message import (
    RELEASED_HEADER,
    TaskMessage,
    WireMessage,
    body_from_text,
    body_to_text,
)
from django_tq.models import OutboxMessage
from django_tq.sqlite import write_atomic

#: the relay leaves younger rows to the publish that follows their commit
RELAY_AFTER = dt.timedelta(seconds=2)


def write(message: TaskMessage, wire: WireMessage, *, using: str) -> int:
    """Write ``wire`` to the outbox on alias ``using`` (the caller's transaction); return its id."""
    not_before = message.eta if message.eta is not None and message.eta > timezone.now() else None
    row = OutboxMessage.objects.using(using).create(
        task_id=message.id,
        task_name=message.task,
        queue=message.queue,
        priority=message.priority,
        not_before=not_before,
        headers=wire.headers,
        body=body_to_text(wire.body),
        content_type=wire.content_type,
    )
    return int(row.pk)


def take(row_id: int, publish: Callable[[], None], *, using: str) -> bool:
    """Run ``publish`` for outbox row ``row_id`` and delete the row, unless a relay has it.

    Return whether this call published it (False: already relayed, or being relayed now).
    """
    with write_atomic(using):  # reads, then writes: SQLite's write lock at BEGIN
        rows = OutboxMessage.objects.using(using).select_for_update(skip_locked=True)
        if not list(rows.filter(pk=row_id).values_list("pk", flat=True)):
            return False
        publish()
        OutboxMessage.objects.using(using).filter(pk=row_id).delete()
    return True


def _wire(row: OutboxMessage) -> WireMessage:
    """Return the message of ``row``, marked so the worker checks whether its task already ran."""
    return WireMessage(
        headers={**row.headers, RELEASED_HEADER: True},
        body=body_from_text(row.body),
        content_type=row.content_type,
    )


def aliases() -> list[str]:
    """Return the database aliases that hold an outbox table."""
    return [
        alias for alias in settings.DATABASES if router.allow_migrate_model(alias, OutboxMessage)
    ]


def relay(broker: Broker, now: dt.datetime | None = None, *, limit: int = 200) -> int:
    """Publish outbox rows older than ``RELAY_AFTER`` on every alias; return how many.

    Raise :class:`PublishError` if the broker refuses one, after deleting the rows it took.
    """
    created_before = (now or timezone.now()) - RELAY_AFTER
    total = 0
    for alias in aliases():
        waiting = OutboxMessage.objects.using(alias).filter(created_at__lt=created_before)
        if not waiting.exists():  # the usual case: one read, no locking transaction
            continue
        error: PublishError | None = None
        published = []
        with write_atomic(alias):
            rows = list(waiting.select_for_update(skip_locked=True).order_by("id")[:limit])
            for row in rows:
                not_before = row.not_before.isoformat() if row.not_before else None
                try:
                    broker.publish(
                        _wire(row), queue=row.queue, priority=row.priority, not_before=not_before
                    )
                except PublishError as exc:
                    error = exc
                    break
                published.append(row.pk)
            if published:
                OutboxMessage.objects.using(alias).filter(pk__in=published).delete()
        total += len(published)
        if error is not None:
            raise error
    return total
