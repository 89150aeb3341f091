"""PostgreSQL restarts and killed backends under ``django://`` with workers running.

The queue and the results live in a throwaway cluster of this test's own (``initdb`` into a temp
dir, a free port): the worker subprocesses and a producer subprocess reach it through
``TQ_TEST_PG_PORT``; the test reads the rows with a connection of its own.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.faults.conftest import PostgresCluster
from tests.faults.pg_client import DATABASE, Client

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    # Not under tmp_path: the postgres user cannot enter pytest's private temp directories.
    directory = Path(tempfile.mkdtemp(prefix="tq-faults-pg-"))
    pg = PostgresCluster(directory)
    pg.start()
    pg.sql(f"CREATE DATABASE {DATABASE}")
    yield pg
    pg.kill()
    shutil.rmtree(directory, ignore_errors=True)


def _now(client: Client) -> dt.datetime:
    return client.sql("SELECT now()")[0][0]


@pytest.mark.timeout(600)  # a cluster, a migration and four client processes
def test_a_postgres_restart_and_killed_backends_lose_nothing(cluster, queue_name, start_worker):
    client = Client(cluster, queue_name)
    client.run("-m", "django", "migrate", "--run-syncdb", "--no-input", "-v", "0")
    worker = start_worker("-P", "prefork", "-c", "2", env=client.env)
    before = client.produce(200)
    wait_for(lambda: client.finished() >= 30, 60, what="30 tasks done")
    # A restart: the fast shutdown disconnects every session, the same data comes back.
    stopped_at = _now(client)
    cluster.stop()
    assert client.run("-m", "tests.faults.produce", "1")[0].startswith("refused")  # loudly
    cluster.start()
    after = client.produce(50)
    running = client.running_at(stopped_at + dt.timedelta(seconds=1))
    runs = client.wait_until_finished(before + after, 120)
    assert runs.lost(before + after) == set()
    # Backend termination (a pooler or an administrator killing sessions) in the middle of work.
    third = client.produce(100)
    wait_for(lambda: client.finished() >= len(before + after) + 30, 60, what="30 more done")
    terminated_at = _now(client)
    killed = client.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{DATABASE}' AND pid <> pg_backend_pid()"
    )
    assert len(killed) >= 2  # the children's own transport connections at least
    running |= client.running_at(terminated_at + dt.timedelta(seconds=1))
    runs = client.wait_until_finished(before + after + third, 120)
    assert runs.lost(before + after + third) == set()
    assert runs.duplicated() <= running
    assert worker.process.poll() is None, worker.output()
    wait_for(
        lambda: (
            not client.sql(
                "SELECT pid FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%'"
            )
        ),
        10,
        what="no session idle in transaction",
    )
