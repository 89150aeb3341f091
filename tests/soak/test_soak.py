"""The endurance soak (SPEC §12): a worker draining a steady stream for half an hour leaks nothing.

Runs only with ``TQ_SOAK=1`` (a CI job of its own, docs/testing.md): 30 minutes by default,
``TQ_SOAK_MINUTES`` to shorten it, ``TQ_SOAK_BROKERS`` (comma-separated: ``django``, ``redis``,
``amqp``; default ``django``) for the transports to soak, ``TQ_SOAK_RATE`` tasks per second
(default 40). Needs ``TQ_TEST_DB=postgres``: the database connections are counted in
``pg_stat_activity``, and results are on (the defaults: a result row per task, QUEUED, STARTED,
SUCCESS), so every task exercises the transport, the result writes and the connection handling.

A prefork worker (2 children) drains what the test publishes at a fixed rate; every sampling
interval the test records the worker tree's summed RSS, its open file descriptors, and the
connections to the test database. After a warm-up (a fifth of the run, at least a minute: imports,
caches, allocator arenas), it asserts:

* RSS grows at most 1 MiB per 10 minutes (least-squares slope over the samples, whole tree);
* file descriptors and database connections are flat (the median of the last third of the
  samples is at most one above the median of the first third);
* the worker kept up: every task published finished, none failed.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection

from django_tq import states
from django_tq.models import TaskResult
from tests.conftest import child_pids, wait_for
from tests.testapp.tasks import add

pytestmark = [pytest.mark.slow, pytest.mark.db]

MINUTES = float(os.environ.get("TQ_SOAK_MINUTES", "30"))
RATE = float(os.environ.get("TQ_SOAK_RATE", "40"))
BROKERS = {b.strip() for b in os.environ.get("TQ_SOAK_BROKERS", "django").split(",") if b.strip()}
#: the budget: RSS growth per 10 minutes after the warm-up
RSS_BUDGET_MIB_PER_10_MINUTES = 1.0

if os.environ.get("TQ_SOAK") != "1":
    pytest.skip(
        "the soak runs for TQ_SOAK_MINUTES (30) minutes: only with TQ_SOAK=1 (docs/testing.md)",
        allow_module_level=True,
    )


@dataclass
class Samples:
    """What the test saw of the worker, one entry per sampling tick."""

    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    pids: list[tuple[int, ...]] = field(default_factory=list)
    #: RSS of each process of the tree (parent first), to tell which one grows
    rss_each_kib: list[tuple[int, ...]] = field(default_factory=list)

    def after(self, warm_up: float) -> Samples:
        """Return the samples taken after ``warm_up`` seconds."""
        keep = [i for i, t in enumerate(self.seconds) if t >= warm_up]
        return Samples(
            seconds=[self.seconds[i] for i in keep],
            rss_kib=[self.rss_kib[i] for i in keep],
            fds=[self.fds[i] for i in keep],
            connections=[self.connections[i] for i in keep],
            pids=[self.pids[i] for i in keep],
            rss_each_kib=[self.rss_each_kib[i] for i in keep],
        )


def tree(pid: int) -> list[int]:
    """Return the worker's parent and its children (prefork: no grandchildren)."""
    return [pid, *child_pids(pid)]


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def database_connections() -> int:
    """Return the connections to the test database other than this test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def slope_per_10_minutes(seconds: list[float], values_kib: list[int]) -> float:
    """Return the least-squares slope of ``values`` in MiB per 10 minutes."""
    mean_t = statistics.fmean(seconds)
    mean_v = statistics.fmean(values_kib)
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in zip(seconds, values_kib, strict=True))
    variance = sum((t - mean_t) ** 2 for t in seconds)
    return covariance / variance * 600 / 1024


def thirds(values: list[int]) -> tuple[float, float]:
    """Return the medians of the first and last third of ``values``."""
    third = max(1, len(values) // 3)
    return statistics.median(values[:third]), statistics.median(values[-third:])


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(int(MINUTES * 60 + 300))
def test_a_worker_draining_a_steady_stream_leaks_nothing(start_worker, broker_url, request):
    transport = request.node.callspec.params["broker_url"]
    if transport not in BROKERS:
        pytest.skip(f"TQ_SOAK_BROKERS={','.join(sorted(BROKERS))} does not name {transport}")
    if connection.vendor != "postgresql":
        pytest.skip("the soak counts connections in pg_stat_activity: TQ_TEST_DB=postgres")
    worker = start_worker("-P", "prefork", "-c", "2", env={"TQ_LOG_LEVEL": "WARNING"})

    duration = MINUTES * 60
    warm_up = max(60.0, duration / 5)
    interval = max(2.0, min(20.0, duration / 90))  # ~90 samples, 20 s apart in a 30-minute run
    samples = Samples()
    published: list[str] = []
    started = time.monotonic()
    next_sample = started + 5.0  # the first sample once the children took their first tasks
    while (now := time.monotonic()) < started + duration:
        due = int((now - started) * RATE) + 1
        while len(published) < due:  # a fixed rate, caught up after a slow tick
            published.append(add.delay(len(published), 1).id)
        if now >= next_sample:
            pids = tree(worker.pid)
            assert len(pids) == 3, f"prefork children went missing: {pids}\n{worker.output()}"
            samples.seconds.append(now - started)
            each = tuple(rss_kib(pid) for pid in pids)
            samples.rss_kib.append(sum(each))
            samples.rss_each_kib.append(each)
            samples.fds.append(sum(open_fds(pid) for pid in pids))
            samples.connections.append(database_connections())
            samples.pids.append(tuple(pids))
            next_sample += interval
        time.sleep(0.02)

    def finished() -> bool:
        return TaskResult.objects.filter(state__in=states.READY_STATES).count() >= len(published)

    wait_for(finished, timeout=120, interval=1.0, what="the stream to drain")
    assert TaskResult.objects.filter(state=states.SUCCESS).count() == len(published)
    assert worker.process.poll() is None, worker.output()

    steady = samples.after(warm_up)
    assert len(steady.seconds) >= 6, "too few samples after the warm-up: raise TQ_SOAK_MINUTES"
    rss_slope = slope_per_10_minutes(steady.seconds, steady.rss_kib)
    fds_first, fds_last = thirds(steady.fds)
    conns_first, conns_last = thirds(steady.connections)
    replaced = len(set(steady.pids)) - 1
    print(
        f"\nsoak {transport}: {MINUTES:g} min, {len(published)} tasks at {RATE:g}/s; after "
        f"{warm_up:.0f} s warm-up: RSS {steady.rss_kib[0] / 1024:.1f} -> "
        f"{steady.rss_kib[-1] / 1024:.1f} MiB (slope {rss_slope:+.3f} MiB/10 min), fds "
        f"{fds_first:g} -> {fds_last:g} (min {min(steady.fds)}, max {max(steady.fds)}), "
        f"db connections {conns_first:g} -> {conns_last:g} (max {max(steady.connections)}), "
        f"worker processes replaced {replaced}; RSS per process (parent, children) "
        f"{steady.rss_each_kib[0]} -> {steady.rss_each_kib[-1]} KiB"
    )
    assert replaced == 0, "a child was replaced: its RSS and fds are not comparable"
    assert rss_slope <= RSS_BUDGET_MIB_PER_10_MINUTES, (
        f"RSS grows {rss_slope:.2f} MiB per 10 minutes: {steady.rss_kib}"
    )
    assert fds_last <= fds_first + 1, f"open file descriptors grow: {steady.fds}"
    assert conns_last <= conns_first + 1, f"database connections grow: {steady.connections}"
