"""The worker's metrics endpoint (``tqworker --metrics-port``): the task metrics of every
process of the worker and the gauges of its pool.

``prepare()`` runs in the parent before the pool starts, so prefork children inherit the
multiprocess directory and the task tally the consumers count into; ``Exporter.start()`` then
serves from the parent. Without ``--metrics-port`` (or ``TQ["METRICS_PORT"]``) none of this is imported.
"""

from __future__ import annotations

import os

from django_tq.metrics import multiprocess, tasks
from django_tq.metrics.collectors import WorkerCollector, WorkerSample
from django_tq.metrics.exporter import Exporter
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


def prepare(
    hostname: str, pool: Pool, *, port: int, address: str
) -> tuple[Exporter, tasks.TaskTally]:
    """Enter multiprocess mode, create the task metrics, and return the (unstarted) exporter
    and the tally the consumers count their tasks into."""
    directory = multiprocess.prepare()
    tally = tasks.connect()
    collector = WorkerCollector(lambda: sample(hostname, pool))
    exporter = Exporter(port=port, address=address, directory=directory, collectors=[collector])
    return exporter, tally
