"""Exchanges on the transports that have none (``django://``, ``redis://``): the queues a key reaches.

RabbitMQ routes a message published to an exchange by itself. ``django://`` and ``redis://``
store messages per queue only, so the publisher does the routing: it matches the routing key
against the binding keys of ``TQ["QUEUES"]`` (AMQP ``direct``/``topic``/``fanout`` semantics,
``exchanges.Topology.bound``) and stores one copy in each queue reached.

A Broadcast queue reached this way stands for one copy per worker consuming it: the live workers
(``WorkerState`` rows with a recent heartbeat and no ``stopped_at``) whose queues include it each
get a copy in ``<name>.<hostname>``, the queue their consumers read instead of the Broadcast
queue itself (``Topology.consumed``). A worker not running at publish time gets no copy, as with
RabbitMQ's per-worker auto-delete queues.
"""

from __future__ import annotations

from datetime import datetime

from django.db import router
from django.utils import timezone

from django_tq.exchanges import Topology, copy_name
from django_tq.models import WorkerState
from django_tq.models.workers import LOST_AFTER


def live_consumers(broadcast: str, now: datetime | None = None) -> list[str]:
    """Return the hostnames of the live workers that consume the Broadcast queue ``broadcast``."""
    now = now or timezone.now()
    alias = router.db_for_read(WorkerState) or "default"
    rows = WorkerState.objects.using(alias).filter(
        stopped_at__isnull=True, last_heartbeat__gt=now - LOST_AFTER
    )
    return sorted(
        hostname
        for hostname, queues in rows.values_list("hostname", "queues")
        if isinstance(queues, list) and broadcast in queues
    )


def queues_reached(topology: Topology, exchange: str, routing_key: str) -> list[str]:
    """Return the queues to store a copy in for a message sent to ``exchange`` with ``routing_key``."""
    names: list[str] = []
    for queue in topology.bound(exchange, routing_key):
        if queue.broadcast:
            names.extend(copy_name(queue.name, host) for host in live_consumers(queue.name))
        else:
            names.append(queue.name)
    return names
