"""Queues in use: every queue, its depth, and how many live workers consume it.

One reading for the REST API's ``queues/``, the admin dashboard and the worker's depth samples.
A queue is "in use" when it is the default queue, a live worker consumes it, it appears in the
latest results, or (``django://``) messages wait in it. Depth comes from one grouped query on the
``django://`` queue table, else from the broker (one call per queue; ``None`` when it fails).

A RabbitMQ quorum queue ``q`` in use brings its ``q.delivery-limit`` along (what RabbitMQ took off
``q`` at its delivery limit, waiting for a worker's housekeeping to run it again or keep it dead),
as a row of its own: counted in ``q``'s depth it would look like work a consumer will take. Its
workers are ``q``'s, since they are the ones who read it back.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count

from django_tq.broker import Broker, get_broker
from django_tq.conf import tq_settings
from django_tq.models import QueueMessage, TaskResult, WorkerState
from django_tq.models.workers import LOST_AFTER

logger = logging.getLogger("django_tq.queues")

#: how many of the latest results are looked at for queue names
RECENT_RESULTS = 1000


@dataclass(frozen=True, kw_only=True)
class QueueInfo:
    """One queue: its name, depth (``None``: unknown) and number of live consumers."""

    name: str
    depth: int | None
    workers: int


def _consumers(now: datetime) -> Counter[str]:
    alive = WorkerState.objects.filter(
        stopped_at__isnull=True, last_heartbeat__gt=now - LOST_AFTER
    ).values_list("queues", flat=True)
    return Counter(
        name
        for queues in alive
        if isinstance(queues, list)
        for name in queues
        if isinstance(name, str)
    )


def _recent_queue_names() -> set[str]:
    latest = TaskResult.objects.order_by("-date_created", "-id").values_list("queue", flat=True)
    return set(latest[:RECENT_RESULTS])


def _database_depths(broker: Broker) -> dict[str, int]:
    rows = (
        QueueMessage.objects.using(broker.database_alias)
        .order_by()
        .values_list("queue")
        .annotate(depth=Count("id"))
    )
    return {name: depth for name, depth in rows}


def _broker_depth(broker: Broker, name: str) -> int | None:
    try:
        return broker.depth(name)
    except Exception:  # depth is informative: an unreachable broker must not fail the page
        logger.warning("Could not read the depth of queue %r from the broker", name, exc_info=True)
        return None


def overview(now: datetime, broker: Broker | None = None) -> list[QueueInfo]:
    """Return every queue in use, sorted by name (read through ``broker``, default the shared one)."""
    broker = broker or get_broker()
    consumers = _consumers(now)
    readers: dict[str, str] = {}  # a .delivery-limit queue -> the quorum queue it belongs to
    names = {tq_settings.DEFAULT_QUEUE, *consumers, *_recent_queue_names()}
    if broker.is_database:
        depths = _database_depths(broker)
        names.update(depths)
        known: dict[str, int | None] = {name: depths.get(name, 0) for name in names if name}
    else:
        readers = {
            limit_queue: name
            for name in names
            if name and (limit_queue := broker.delivery_limit_queue(name)) is not None
        }
        known = {name: _broker_depth(broker, name) for name in names | set(readers) if name}
    return [
        QueueInfo(name=name, depth=depth, workers=consumers[readers.get(name, name)])
        for name, depth in sorted(known.items())
    ]
