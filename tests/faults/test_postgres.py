"""PostgreSQL restarts and killed backends under ``django://`` with workers running.

The queue and the results live in a throwaway cluster of this test's own (``initdb`` into a temp
dir, a free port): the worker subprocesses and a producer subprocess reach it through
``TQ_TEST_PG_PORT``; the test reads the rows with a connection of its own.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for, worker_env
from tests.faults.conftest import LEASE_SECONDS, PostgresCluster, Runs

pytestmark = pytest.mark.slow

DATABASE = "tq_faults"


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


class Client:
    """Processes pointed at the cluster: ``migrate``, producers, and what the tasks wrote."""

    def __init__(self, cluster: PostgresCluster, queue: str, database: str = DATABASE) -> None:
        self.cluster = cluster
        self.database = database
        self.env = {
            "TQ_TEST_DB": "postgres",
            "TQ_TEST_PG_PORT": str(cluster.port),
            "TQ_TEST_DB_NAME": database,
            "TQ_SETTINGS_JSON": json.dumps(
                {"BROKER_URL": "django://", "DEFAULT_QUEUE": queue, "LEASE_SECONDS": LEASE_SECONDS}
            ),
        }

    def run(self, *args: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env={**worker_env(), **self.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.splitlines()

    def produce(self, count: int) -> list[str]:
        """Send ``count`` tasks; return the ids whose ``.delay()`` returned."""
        lines = self.run("-m", "tests.faults.produce", str(count))
        refused = [line for line in lines if line.startswith("refused")]
        assert not refused, refused[:3]
        return lines

    def sql(self, statement: str) -> list[tuple]:
        return self.cluster.sql(statement, self.database)

    def runs(self) -> Runs:
        starts: Counter[str] = Counter()
        ends: Counter[str] = Counter()
        for task_id, label in self.sql("SELECT task_id, label FROM testapp_execution"):
            (starts if label.startswith("start:") else ends)[task_id] += 1
        return Runs(starts=starts, ends=ends)

    def finished(self) -> int:
        return self.sql("SELECT count(*) FROM testapp_execution WHERE label LIKE 'end:%'")[0][0]

    def running_at(self, moment: dt.datetime) -> set[str]:
        """Return the tasks started before ``moment`` whose success was not recorded by then."""
        rows = self.sql(
            "SELECT e.task_id FROM testapp_execution e WHERE e.label LIKE 'start:%%' "
            f"AND e.created_at <= '{moment.isoformat()}' AND NOT EXISTS (SELECT 1 FROM "
            "django_tq_taskresult r WHERE r.task_id = e.task_id AND r.state = 'SUCCESS' "
            f"AND r.date_done <= '{moment.isoformat()}')"
        )
        return {task_id for (task_id,) in rows}

    def wait_until_finished(self, ids: list[str], timeout: float) -> Runs:
        wait_for(
            lambda: self.finished() >= len(ids) and not self.runs().lost(ids),
            timeout,
            interval=0.25,
            what=f"{len(ids)} tasks to finish",
        )
        return self.runs()


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
