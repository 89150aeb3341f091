"""Purging queues: what waits in them never runs, and nothing is left waiting for it.

:func:`count` says what a purge would touch; :func:`purge` does it, in this order:

1. **Ready messages are read and revoked** (unless ``discard``): each one is recorded REVOKED
   through :func:`django_tq.execution.record`, the same path a worker takes for a revoked task,
   so its chord fails, the rest of its chain fails, its errbacks run and its unique key is freed;
   then it is acked. A message that is not ours, cannot be decoded, fails its signature
   (``SIGNING``) or names a task this process does not know is only deleted.
2. **Parked messages** (an ETA beyond ``ETA_HORIZON_SECONDS``) of these queues: the same, read
   from their rows.
3. **What is left at the broker** (delayed messages not due yet; with ``discard``, everything)
   is deleted unread.
4. **Results still QUEUED** in these queues and created before the purge began become REVOKED
   (reason ``"purged"``) and their unique keys are freed: nothing polls for a task that will not
   run. A copy a worker had already prefetched finds its result finished and is skipped.

Messages a worker holds (prefetched, leased) are not deleted, as with Celery's purge; step 4
makes sure they do not run. Stop the workers first to purge everything in one go.

A RabbitMQ quorum queue ``q`` is purged with its ``q.delivery-limit``: what RabbitMQ took off
``q`` at its delivery limit is ``q``'s work too (the worker would publish the innocent ones back
on ``q``), so step 1 reads and revokes it as well (and step 3 discards what is left there).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.signing import BadSignature
from django.db import router
from django.db.models import QuerySet
from django.utils import timezone

from django_tq import message as wire_format
from django_tq import signing, states
from django_tq.broker import Broker, Delivery, delivery_limit, get_broker
from django_tq.conf import tq_settings
from django_tq.exceptions import DecodeError, NotRegistered
from django_tq.execution import Outcome, record, send_revoked
from django_tq.message import TaskMessage, WireMessage
from django_tq.models import ParkedMessage, TaskResult, UniqueLock
from django_tq.registry import registry

logger = logging.getLogger("django_tq.purge")

#: what a purged task's result says
PURGED = {"reason": "purged"}
#: how long a read of the queues waits for one more message before it counts them drained
IDLE_SECONDS = 0.5
#: messages read (and held) at a time while revoking
PREFETCH = 100
#: results marked REVOKED per statement
BATCH = 1000


@dataclass(frozen=True, kw_only=True)
class QueueCount:
    """What waits in one queue: at the broker (``None``: unknown), parked, and QUEUED results."""

    queue: str
    waiting: int | None
    parked: int
    queued_results: int
    #: a quorum queue's: in its ``.delivery-limit`` queue (``None``: unknown; 0 for any other)
    at_delivery_limit: int | None = 0


@dataclass(kw_only=True)
class Purged:
    """What a purge did, summed over its queues."""

    revoked: int = 0  #: messages read and recorded REVOKED (their workflows settled)
    deleted: int = 0  #: messages deleted without a result to record (foreign, undecodable, …)
    discarded: int = 0  #: messages deleted unread at the broker
    results: int = 0  #: QUEUED results marked REVOKED in step 4
    queues: list[str] = field(default_factory=list)

    @property
    def messages(self) -> int:
        """Return how many messages left the queues."""
        return self.revoked + self.deleted + self.discarded


def count(queues: Iterable[str], *, broker: Broker | None = None) -> list[QueueCount]:
    """Return what waits in each of ``queues`` (cheap reads: one call or query per figure)."""
    broker = broker or get_broker()
    counts = []
    for name in queues:
        limit_queue = broker.delivery_limit_queue(name)
        counts.append(
            QueueCount(
                queue=name,
                waiting=_depth(broker, name),
                parked=ParkedMessage.objects.filter(queue=name).count(),
                queued_results=_queued(name, timezone.now()).count(),
                at_delivery_limit=0 if limit_queue is None else _depth(broker, limit_queue),
            )
        )
    return counts


def _depth(broker: Broker, name: str) -> int | None:
    try:
        return broker.depth(name)
    except Exception:  # an unreachable broker: say so, do not fail the count
        logger.warning("Could not read the depth of queue %r", name, exc_info=True)
        return None


def purge(queues: Iterable[str], *, discard: bool = False, broker: Broker | None = None) -> Purged:
    """Purge ``queues`` as the module docstring says; return what was done."""
    broker = broker or get_broker()
    names = list(dict.fromkeys(queues))
    began = timezone.now()
    done = Purged(queues=names)
    quorum = [name for name in names if broker.delivery_limit_queue(name) is not None]
    if not discard:
        _revoke_ready(broker, names, done)
        _revoke_at_delivery_limit(broker, quorum, done)
        _revoke_parked(names, done)
    else:
        done.discarded += ParkedMessage.objects.filter(queue__in=names).delete()[0]
    done.discarded += broker.purge(names)  # the .delivery-limit queues too
    for name in names:
        done.results += _revoke_queued(name, began)
    logger.info(
        "Purged %s: %d message(s) revoked, %d deleted, %d discarded; %d result(s) revoked",
        ", ".join(names),
        done.revoked,
        done.deleted,
        done.discarded,
        done.results,
    )
    return done


# -- reading and revoking -------------------------------------------------------------------------
def _revoke(wire: WireMessage, queue: str) -> bool:
    """Record the message as REVOKED (True), or return False when it is not a task we can name."""
    try:
        if tq_settings.SIGNING:
            signing.verify(wire.headers, wire.body, wire.content_type)
        message: TaskMessage = wire_format.decode(
            wire.headers,
            Delivery.decompressed(wire.headers, wire.body),
            wire.content_type,
            queue=queue,
            accept=list(tq_settings.ACCEPT_CONTENT),
        )
        task = registry.get(message.task)
    except (BadSignature, DecodeError, NotRegistered) as exc:
        logger.info("Deleting a message of %s that is not a task to revoke: %s", queue, exc)
        return False
    outcome = Outcome(state=states.REVOKED, result=PURGED)
    send_revoked(task, message.id, outcome)  # as a worker does when it skips a revoked task
    record(message, outcome)
    return True


def _revoke_delivery(delivery: Delivery, done: Purged) -> None:
    """Revoke the task of ``delivery`` (or count it deleted, if it is none), then ack it."""
    wire = WireMessage(
        headers=delivery.headers, body=delivery.body, content_type=delivery.content_type
    )
    if _revoke(wire, delivery.queue):
        done.revoked += 1
    else:
        done.deleted += 1
    delivery.ack()


def _revoke_ready(broker: Broker, queues: list[str], done: Purged) -> None:
    subscription = broker.subscribe(
        queues, prefetch=PREFETCH, on_delivery=lambda delivery: _revoke_delivery(delivery, done)
    )
    try:
        while True:
            before = done.revoked + done.deleted
            subscription.drain(IDLE_SECONDS)
            if done.revoked + done.deleted == before:
                return
    finally:
        subscription.close()


def _revoke_at_delivery_limit(broker: Broker, queues: list[str], done: Purged) -> None:
    """Step 1 for the ``.delivery-limit`` queues of the quorum queues among ``queues``."""
    if not queues:
        return
    reader = delivery_limit.DeliveryLimitQueues(broker, queues)
    try:
        while taken := reader.take(PREFETCH):
            for delivery in taken:  # its queue is the quorum queue it came from
                _revoke_delivery(delivery, done)
    finally:
        reader.close()


def _revoke_parked(queues: list[str], done: Purged) -> None:
    rows = ParkedMessage.objects.filter(queue__in=queues).order_by("id")
    for row in rows.iterator():
        wire = WireMessage(
            headers=row.headers,
            body=wire_format.body_from_text(row.body),
            content_type=row.content_type,
        )
        if _revoke(wire, row.queue):
            done.revoked += 1
        else:
            done.deleted += 1
        ParkedMessage.objects.filter(pk=row.pk).delete()


def _queued(queue: str, before: dt.datetime) -> QuerySet[TaskResult]:
    alias = router.db_for_write(TaskResult) or "default"
    return TaskResult.objects.using(alias).filter(
        queue=queue, state=states.QUEUED, date_created__lte=before
    )


def _revoke_queued(queue: str, before: dt.datetime) -> int:
    """Mark the QUEUED results of ``queue`` created before ``before`` REVOKED; free their keys."""
    rows = _queued(queue, before)
    total = 0
    while ids := list(rows.values_list("task_id", flat=True)[:BATCH]):
        UniqueLock.objects.filter(task_id__in=ids).delete()
        total += rows.filter(task_id__in=ids).update(
            state=states.REVOKED, result=PURGED, date_done=timezone.now()
        )
    return total
