"""Processes pointed at a private PostgreSQL cluster: ``migrate``, producers, and the rows.

The worker subprocesses and producer subprocesses reach the cluster through ``TQ_TEST_PG_HOST``
and ``TQ_TEST_PG_PORT``; the test reads what the tasks wrote with a connection of its own.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections import Counter

from tests.conftest import ROOT, wait_for, worker_env
from tests.faults.conftest import LEASE_SECONDS, Runs, Service

DATABASE = "tq_faults"


class Client:
    """Processes pointed at the cluster: ``migrate``, producers, and what the tasks wrote."""

    def __init__(
        self,
        cluster: Service,
        queue: str,
        database: str = DATABASE,
        *,
        broker_url: str = "django://",
        pg_options: dict[str, object] | None = None,
        via: Service | None = None,
        settings: dict[str, object] | None = None,
    ) -> None:
        """``cluster``: a PostgreSQL cluster, or a pooler in front of one (anything with
        ``host``, ``port`` and ``sql()``); ``pg_options``: the ``DATABASES`` ``OPTIONS`` of
        every process (libpq timeouts); ``via``: what the processes connect to instead of the
        cluster (a latency relay, tests/faults/network.py) — the test's own reads go direct;
        ``settings``: more ``TQ`` settings of every process."""
        self.cluster = cluster
        self.database = database
        reached = via or cluster
        self.env = {
            "TQ_TEST_DB": "postgres",
            "TQ_TEST_PG_OPTIONS": json.dumps(pg_options or {}),
            "TQ_TEST_PG_HOST": reached.host,
            "TQ_TEST_PG_PORT": str(reached.port),
            "TQ_TEST_DB_NAME": database,
            "TQ_SETTINGS_JSON": json.dumps(
                {
                    "BROKER_URL": broker_url,
                    "DEFAULT_QUEUE": queue,
                    "LEASE_SECONDS": LEASE_SECONDS,
                    **(settings or {}),
                }
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

    def produce(self, count: int, seconds: float = 0.0) -> list[str]:
        """Send ``count`` tasks (sleeping ``seconds``); return the ids whose ``.delay()`` returned."""
        lines = self.run("-m", "tests.faults.produce", str(count), str(seconds))
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
