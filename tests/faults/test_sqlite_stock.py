"""The embedded default under load: a SQLite file with the settings ``startproject`` writes.

No ``OPTIONS`` (deferred transactions, Python's 5 s busy timeout) and a file in the rollback
journal mode every new SQLite database starts in. A real prefork worker, a real ``tqbeat`` with a
schedule declared in code every second, and two web-like processes writing rows and enqueueing
countdown tasks in a loop all share that one file, while this test reads it like a shell. Nothing
may exit, nothing may wait past its time, beat sends each occurrence once, and the logs carry no
traceback for a busy database.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.beat.conftest import RECORD, BeatProcess
from tests.conftest import ROOT, WorkerProcess, wait_for, worker_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

#: how long the web-like writers write
WRITE_SECONDS = 15
#: how late a task may start after its ETA (or its enqueue) on a loaded 2-core machine
LATE = dt.timedelta(seconds=3)
SECOND = dt.timedelta(seconds=1)


def _stock_copy(path: Path) -> Path:
    """Copy the migrated test database to ``path`` in the rollback journal mode (no WAL)."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM INTO %s", [str(path)])
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    finally:
        db.close()
    return path


class Shell:
    """A read-only look at the stock database, as ``manage.py shell`` would take."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, timeout=5)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self.db.execute(sql, params).fetchall())

    def executions(self) -> dict[str, list[tuple[str, dt.datetime]]]:
        """Return each task id's ``Execution`` rows: (label, created_at)."""
        found: dict[str, list[tuple[str, dt.datetime]]] = {}
        for task_id, label, created_at in self.rows(
            "SELECT task_id, label, created_at FROM testapp_execution"
        ):
            found.setdefault(task_id, []).append((label, _when(created_at)))
        return found

    def close(self) -> None:
        self.db.close()


def _when(text: str | None) -> dt.datetime:
    assert text is not None
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _writer(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.web_writer", str(WRITE_SECONDS)],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _reports(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines()
    reports = []
    for line in lines:
        try:
            reports.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"a web writer printed {line!r}:\n{log.read_text()[-3000:]}")
    return reports


def test_worker_beat_and_web_writers_share_a_stock_sqlite_file(tmp_path: Path) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the embedded default is SQLite")
    stock = _stock_copy(tmp_path / "stock.sqlite3")
    env = {
        **worker_env(),
        "TQ_TEST_DB_NAME": str(stock),
        "TQ_TEST_SQLITE_STOCK": "1",
        "TQ_SETTINGS_JSON": json.dumps(
            {
                "BROKER_URL": "django://",
                "ETA_HORIZON_SECONDS": 1,  # countdowns over 1 s wait in the parking table
                "BEAT_MAX_LOOP_INTERVAL": 1,
                "BEAT_SCHEDULE": {
                    "every-second": {"task": RECORD, "schedule": 1, "kwargs": {"label": "beat"}}
                },
            }
        ),
    }
    logs = [tmp_path / "web-0.log", tmp_path / "web-1.log"]
    writers = [_writer(env, log) for log in logs]
    worker = WorkerProcess(["-P", "prefork", "-c", "2"], env, tmp_path / "worker.log")
    beat = BeatProcess([], env, tmp_path / "beat.log")
    shell = Shell(stock)
    try:
        worker.wait_ready()
        beat.wait_ready()
        while any(writer.poll() is None for writer in writers):  # the shell reads meanwhile
            shell.rows("SELECT state, COUNT(*) FROM django_tq_taskresult GROUP BY state")
            assert worker.process.poll() is None, f"the worker exited:\n{worker.output()[-5000:]}"
            assert beat.process.poll() is None, f"beat exited:\n{beat.output()[-5000:]}"
            time.sleep(0.2)
        for writer, log in zip(writers, logs, strict=True):
            assert writer.wait(10) == 0, log.read_text()[-3000:]
        reports = [report for log in logs for report in _reports(log)]
        assert all(any("done" in r for r in _reports(log)) for log in logs)
        enqueued = [report["id"] for report in reports if "id" in report]
        assert len(enqueued) >= 50, reports[-20:]

        wait_for(
            lambda: set(enqueued) <= set(shell.executions()),
            timeout=30,
            interval=0.25,
            what=f"the {len(enqueued)} web tasks to run",
        )
        assert beat.stop() == 0, beat.output()[-5000:]
        runs = shell.rows(
            "SELECT scheduled_for, task_id, sent_at FROM django_tq_periodictaskrun "
            "ORDER BY scheduled_for"
        )
        wait_for(
            lambda: {task_id for _, task_id, _ in runs} <= set(shell.executions()),
            timeout=30,
            interval=0.25,
            what="the beat tasks to run",
        )
        executions = shell.executions()
        assert worker.process.poll() is None, f"the worker exited:\n{worker.output()[-5000:]}"

        # Nothing waited past its time: each task ran within LATE of its ETA (or its enqueue).
        due = {
            task_id: max(_when(created), _when(eta) if eta else _when(created))
            for task_id, created, eta in shell.rows(
                "SELECT task_id, date_created, eta FROM django_tq_taskresult"
            )
        }
        lateness = {
            task_id: min(when for _, when in executions[task_id]) - due[task_id]
            for task_id in enqueued
        }
        refused = Counter(report["where"] for report in reports if "refused" in report)
        print(
            f"{len(enqueued)} web tasks enqueued (refused by the web's own settings: "
            f"{dict(refused)}), "
            f"{len(runs)} beat runs; latest start {max(lateness.values())} after its time"
        )
        late = {task_id: late for task_id, late in lateness.items() if late > LATE}
        assert late == {}, f"{len(late)} of {len(enqueued)} tasks ran late: {late}"
        assert all(len(executions[task_id]) == 1 for task_id in enqueued)

        # Beat sent every occurrence once: none missing (one second apart), none twice.
        assert len(runs) >= WRITE_SECONDS - 5, runs
        assert all(sent_at is not None for _, _, sent_at in runs), runs
        gaps = {later - earlier for earlier, later in pairwise(_when(r[0]) for r in runs)}
        assert gaps == {SECOND}, sorted(gaps)
        beat_runs = Counter(
            task_id for task_id, rows in executions.items() for label, _ in rows if label == "beat"
        )
        assert set(beat_runs) == {task_id for _, task_id, _ in runs}
        assert set(beat_runs.values()) == {1}

        assert worker.stop() == 0
        for process in (worker, beat):
            assert "Traceback" not in process.output(), process.output()[-5000:]
    finally:
        shell.close()
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait(10)
        for process in (worker, beat):
            process.stop()
            process.kill_tree()
            print(f"--- {process.command} output ---\n{process.output()[-5000:]}")
