"""Every django_tq signal about a task fires once per execution, in order, in a real worker.

Receivers (tests/testapp/signal_log.py) append a line per signal to a file: the test process
writes the publishing ones, the worker's processes the others.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from django_tq import AsyncResult, states
from tests.conftest import wait_for
from tests.testapp import signal_log
from tests.testapp.models import Execution
from tests.testapp.tasks import add, always_retries, fail, record, runs_until_stopped

pytestmark = pytest.mark.django_db(transaction=True)

PUBLISHED = ["before_task_publish", "after_task_publish", "task_enqueued"]
RAN = ["task_received", "task_started", "task_prerun"]


@pytest.fixture
def signal_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Log every signal of this process and of the workers started after it to a file."""
    path = tmp_path / "signals.jsonl"
    monkeypatch.setenv(signal_log.ENV, str(path))
    signal_log.connect()
    yield path
    signal_log.disconnect()


def of(lines: list[dict[str, Any]], task_id: str) -> list[str]:
    return [line["signal"] for line in lines if line["task_id"] == task_id]


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_every_task_signal_fires_once_per_task_in_order(
    pool: str, signal_file: Path, start_worker: Any
) -> None:
    skipped = record.delay("skipped")
    skipped.revoke()  # before any worker: skipped when it arrives
    expired = add.apply_async((1, 1), expires=timezone.now() - dt.timedelta(seconds=1))
    worker = start_worker("-P", pool, "-c", "1")
    ok = add.delay(2, 3)
    bad = fail.delay("nope")
    retried = always_retries.delay()  # two retries, then a failure
    assert ok.get(timeout=20) == 5
    for result in (bad, retried):
        wait_for(lambda r=result: AsyncResult(r.id).state == states.FAILURE, what="failure")
    stopped = runs_until_stopped.delay(25, "stopped")
    wait_for(lambda: Execution.objects.filter(task_id=stopped.id).exists(), what="stopped start")
    stopped.revoke(terminate=True)
    wait_for(lambda: AsyncResult(stopped.id).state == states.REVOKED, what="REVOKED")
    assert worker.stop() == 0

    lines = signal_log.read(signal_file)
    finished = ["task_postrun", "task_finished"]
    attempt = [*RAN, "task_retried", "task_postrun", *PUBLISHED]  # the retry is published after
    assert of(lines, skipped.id) == [*PUBLISHED, "task_revoked", "task_finished"]
    assert of(lines, expired.id) == [*PUBLISHED, "task_received", "task_revoked", "task_finished"]
    assert of(lines, ok.id) == [*PUBLISHED, *RAN, "task_succeeded", *finished]
    assert of(lines, bad.id) == [*PUBLISHED, *RAN, "task_failed", *finished]
    assert of(lines, retried.id) == [*PUBLISHED, *attempt, *attempt, *RAN, "task_failed", *finished]
    assert of(lines, stopped.id) == [*PUBLISHED, *RAN, "task_revoked", *finished]

    by_task = {line["task_id"]: line for line in lines if line["signal"] == "task_revoked"}
    assert by_task[stopped.id]["terminated"] is True
    assert by_task[stopped.id]["signal_name"] == "SIGTERM"
    assert by_task[skipped.id]["terminated"] is False
    assert by_task[skipped.id]["signal_name"] is None
    revoked_arguments = ["expired", "signal_name", "signum", "task_id", "terminated"]
    assert all(line["arguments"] == revoked_arguments for line in by_task.values())

    started = [line for line in lines if line["signal"] == "task_started"]
    assert {tuple(line["arguments"]) for line in started} == {
        ("args", "kwargs", "request", "task", "task_id")
    }
    assert {line["hostname"] for line in started} == {f"tq-{worker.pid}@{socket.gethostname()}"}
    assert not any(line["is_eager"] for line in started)
    prerun = [line for line in lines if line["signal"] == "task_prerun"]
    assert [line["pid"] for line in started] == [line["pid"] for line in prerun]

    workers = [line for line in lines if line["signal"].startswith("worker_")]
    names = sorted(line["signal"] for line in workers)
    assert names == sorted(
        ["worker_process_init", "worker_ready", "worker_process_shutdown", "worker_shutdown"]
    )
    assert workers[-1]["signal"] == "worker_shutdown" and workers[-1]["pid"] == worker.pid
    ready = next(line for line in workers if line["signal"] == "worker_ready")
    assert ready["pid"] == worker.pid
    init = next(line for line in workers if line["signal"] == "worker_process_init")
    assert init["index"] == 0
    assert init["pid"] == (started[0]["pid"] if pool == "prefork" else worker.pid)


def test_eager_mode_sends_task_started_with_the_same_arguments(signal_file: Path) -> None:
    eager = add.apply((2, 2))
    assert eager.get() == 4
    lines = signal_log.read(signal_file)
    # nothing is received from a broker nor recorded: no task_received, no task_finished
    assert of(lines, eager.id) == ["task_started", "task_prerun", "task_succeeded", "task_postrun"]
    started = next(line for line in lines if line["signal"] == "task_started")
    assert started["arguments"] == ["args", "kwargs", "request", "task", "task_id"]
    assert started["is_eager"] is True
    assert started["sender"] == add.name


def test_a_task_killed_by_terminate_sigkill_is_announced_by_the_parent(
    signal_file: Path, start_worker: Any
) -> None:
    worker = start_worker("-P", "prefork", "-c", "1")
    result = runs_until_stopped.delay(25, "killed")
    wait_for(lambda: Execution.objects.filter(task_id=result.id).exists(), what="task start")
    result.revoke(terminate=True, signal="SIGKILL")
    wait_for(lambda: AsyncResult(result.id).state == states.REVOKED, what="REVOKED")
    assert worker.stop() == 0
    lines = signal_log.read(signal_file)
    # the child died in the task: no task_postrun; the parent records the task and says so
    assert of(lines, result.id) == [*PUBLISHED, *RAN, "task_revoked", "task_finished"]
    revoked = next(line for line in lines if line["signal"] == "task_revoked")
    assert (revoked["terminated"], revoked["signal_name"]) == (True, "SIGKILL")
    assert revoked["pid"] == worker.pid
