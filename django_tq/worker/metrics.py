"""The worker's metrics endpoint (``tqworker --metrics-port``): the task metrics of every
process of the worker and the gauges of its pool.

``prepare()`` runs in the parent before the pool starts, so prefork children inherit the
multiprocess directory and the connected receivers; ``Exporter.start()`` then serves from the
parent. Without ``--metrics-port`` (or ``TQ["METRICS_PORT"]``) none of this is imported.
"""

from __future__ import annotations

import os

from django_tq.metrics import tasks
from django_tq.metrics.collectors import WorkerCollector, WorkerSample
from django_tq.metrics.exporter import Exporter
from django_tq.metrics.multiprocess import prepare
from django_tq.worker import memory
from django_tq.worker.pool import Pool


def sample(hostname: str, pool: Pool) -> WorkerSample:
    """Read the gauges of ``pool`` now (a scrape calls this; it never touches the database)."""
    pids = [os.getpid(), *pool.child_pids()]
    return WorkerSample(
        hostname=hostname,
        pool=pool.name,
        concurrency=pool.concurrency,
        busy=len(pool.running_tasks()),
        processed=pool.processed(),
        restarts=pool.restarts,
        resident_bytes=sum(memory.resident_kib_of(pid) for pid in pids) * 1024,
    )


def exporter(hostname: str, pool: Pool, *, port: int, address: str) -> Exporter:
    """Enter multiprocess mode, connect the task metrics, and return the (unstarted) exporter."""
    directory = prepare()
    tasks.connect()
    collector = WorkerCollector(lambda: sample(hostname, pool))
    return Exporter(port=port, address=address, directory=directory, collectors=[collector])
