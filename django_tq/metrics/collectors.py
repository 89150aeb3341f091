"""Gauges read when Prometheus scrapes, never on a task's path: one worker's pool, and the
cluster's queues, results and workers (the same cheap queries as the admin's queue screen)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from django_tq import queues
from django_tq.broker import Broker, get_broker
from django_tq.models import QueueMessage, TaskResult, WorkerState
from django_tq.models.workers import LOST_AFTER


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerSample:
    """One reading of a worker's pool."""

    hostname: str
    pool: str
    concurrency: int
    busy: int  #: consumers running a task now
    processed: int  #: tasks its consumers finished since it started
    restarts: int  #: children (or threads) started again after one ended
    resident_bytes: int  #: resident memory of the worker process and its children


class WorkerCollector:
    """The gauges of one worker, read from ``sample()`` at scrape time."""

    def __init__(self, sample: Callable[[], WorkerSample]) -> None:
        self.sample = sample

    def collect(self) -> Iterator[Any]:
        """Yield the worker's metric families."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        now = self.sample()
        labels = ["worker"]
        value = [now.hostname]
        info = GaugeMetricFamily(
            "django_tq_worker_info", "A running worker (always 1).", labels=[*labels, "pool"]
        )
        info.add_metric([now.hostname, now.pool], 1)
        yield info
        for name, documentation, reading in (
            ("django_tq_worker_concurrency", "Consumers the worker runs.", now.concurrency),
            ("django_tq_worker_busy", "Consumers running a task now.", now.busy),
            (
                "django_tq_worker_resident_memory_bytes",
                "Resident memory of the worker process and its children.",
                now.resident_bytes,
            ),
        ):
            gauge = GaugeMetricFamily(name, documentation, labels=labels)
            gauge.add_metric(value, reading)
            yield gauge
        for name, documentation, reading in (
            ("django_tq_worker_processed", "Tasks the worker's consumers finished.", now.processed),
            (
                "django_tq_worker_child_restarts",
                "Children started again after one ended (crash, recycling, SIGHUP).",
                now.restarts,
            ),
        ):
            counter = CounterMetricFamily(name, documentation, labels=labels)
            counter.add_metric(value, reading)
            yield counter


def _oldest_ready_age(broker: Broker, name: str, now: dt.datetime) -> float | None:
    """Return the age in seconds of the message at the head of a ``django://`` queue.

    The head is the next message a consumer claims (ready: due and not leased), read with the
    claim index: one short index walk, never a scan of the backlog.
    """
    head = (
        QueueMessage.objects.using(broker.database_alias)
        .filter(queue=name, not_before__lte=now)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
        .order_by("-priority", "id")
        .values_list("created_at", "not_before")
        .first()
    )
    if head is None:
        return 0.0
    created_at, not_before = head
    return max(0.0, (now - max(created_at, not_before)).total_seconds())


class ClusterCollector:
    """Cluster-wide gauges: queue depth, consumers and head age; results by state; workers."""

    def __init__(self, broker: Broker | None = None) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Any]:
        """Yield the cluster's metric families."""
        from prometheus_client.core import GaugeMetricFamily

        broker = self.broker or get_broker()
        now = timezone.now()
        depth = GaugeMetricFamily(
            "django_tq_queue_depth", "Messages waiting in a queue.", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "django_tq_queue_consumers", "Live workers consuming a queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "django_tq_queue_oldest_ready_age_seconds",
            "Age of the next message a consumer would claim (django:// queues only).",
            labels=["queue"],
        )
        for info in queues.overview(now, broker):
            consumers.add_metric([info.name], info.workers)
            if info.depth is not None:
                depth.add_metric([info.name], info.depth)
            if broker.is_database:
                head_age = _oldest_ready_age(broker, info.name, now)
                if head_age is not None:
                    age.add_metric([info.name], head_age)
        yield depth
        yield consumers
        if broker.is_database:
            yield age
        results = GaugeMetricFamily(
            "django_tq_results", "Stored task results by state.", labels=["state"]
        )
        rows = TaskResult.objects.order_by().values_list("state").annotate(count=Count("id"))
        for state, count in rows:
            results.add_metric([state], count)
        yield results
        workers = GaugeMetricFamily(
            "django_tq_workers_alive", "Workers whose heartbeat is recent.", labels=[]
        )
        workers.add_metric(
            [],
            WorkerState.objects.filter(
                stopped_at__isnull=True, last_heartbeat__gt=now - LOST_AFTER
            ).count(),
        )
        yield workers
