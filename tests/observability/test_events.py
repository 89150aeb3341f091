"""Live task events (``tqworker -E``, ``tqevents``) from real worker processes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from django_tq import control, events
from django_tq.broker.fanout import NOTIFY_LIMIT
from tests.conftest import (
    REDIS_URL,
    WorkerProcess,
    wait_for,
    worker_env,
)
from tests.testapp.tasks import always_retries, fail, record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


@pytest.fixture
def receiver(fanout_url: str) -> Iterator[events.EventReceiver]:
    listening = events.EventReceiver()
    yield listening
    listening.close()


def _collect(
    receiver: events.EventReceiver, until: Any, timeout: float = 20.0
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not until(seen) and time.monotonic() < deadline:
        seen += receiver.poll(timeout=0.2)
    return seen


def _of(seen: list[dict[str, Any]], task_id: str) -> dict[str, dict[str, Any]]:
    return {event["type"]: event for event in seen if event.get("uuid") == task_id}


def test_a_worker_with_E_sends_the_events_of_its_tasks(receiver, start_worker):
    revoked = record.delay("never")
    control.revoke(revoked.id)
    start_worker("-E", "-n", "events@test", "-P", "prefork", "-c", "1")
    ok, bad, retried = record.delay("hello"), fail.delay("kaput"), always_retries.delay()
    assert ok.get(timeout=30) == "hello"
    seen = _collect(
        receiver,
        lambda seen: (
            "task-succeeded" in _of(seen, ok.id)
            and "task-failed" in _of(seen, bad.id)
            and "task-retried" in _of(seen, retried.id)
            and "task-revoked" in _of(seen, revoked.id)
        ),
    )
    good = _of(seen, ok.id)
    assert list(good) == ["task-received", "task-started", "task-succeeded"]
    assert good["task-received"]["name"] == "tests.testapp.tasks.record"
    assert "hello" in good["task-received"]["args"]
    assert good["task-succeeded"]["result"] == "'hello'"
    assert good["task-succeeded"]["runtime"] >= 0
    assert all(event["hostname"] == "events@test" for event in good.values())
    failed = _of(seen, bad.id)["task-failed"]
    assert "kaput" in failed["exception"] and failed["name"] == "tests.testapp.tasks.fail"
    assert "Traceback" in failed["traceback"]
    assert "flaky" in _of(seen, retried.id)["task-retried"]["exception"]
    assert _of(seen, revoked.id)["task-revoked"]["name"] == "tests.testapp.tasks.record"
    heartbeat = _collect(receiver, lambda seen: any(e["type"] == "worker-heartbeat" for e in seen))
    assert any(e["hostname"] == "events@test" for e in heartbeat)


def test_without_E_a_worker_sends_nothing(receiver, start_worker):
    start_worker("-n", "quiet@test", "-P", "solo")
    assert record.delay("quiet").get(timeout=30) == "quiet"
    assert _collect(receiver, lambda seen: False, timeout=1.5) == []


def test_tqevents_prints_the_stream_and_ctrl_c_ends_it(fanout_url, start_worker, tmp_path):
    if fanout_url != REDIS_URL:
        pytest.skip("the command is the same on every transport: once is enough")
    printer = _tqevents(tmp_path, "--json")
    try:
        wait_for(lambda: "Listening for events" in printer.output(), 30, what="subscribed")
        start_worker("-E", "-n", "printed@test", "-P", "solo")
        result = record.delay("printed")
        wait_for(lambda: f'"uuid": "{result.id}"' in printer.output(), 30, what="events printed")
        wait_for(lambda: "task-succeeded" in printer.output(), 30)
        printer.signal(signal.SIGINT)
        try:
            code = printer.process.wait(30)  # generous: CI runs legs side by side on 2 cores
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tqevents did not stop on SIGINT:\n{printer.output()}") from None
        output = printer.output()
        assert code == 0, output
        assert "Stopped after" in output
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert {"task-received", "task-started", "task-succeeded"} <= {
            line["type"] for line in lines if line.get("uuid") == result.id
        }
    finally:
        printer.stop()


def _tqevents(tmp_path: Path, *args: str) -> WorkerProcess:
    class Printer(WorkerProcess):
        command = "tqevents"

    return Printer(list(args), worker_env(), tmp_path / "tqevents.log")


def test_events_are_described_on_one_line():
    line = events.describe(
        {
            "type": "task-succeeded",
            "uuid": "abc",
            "name": "shop.tasks.send",
            "hostname": "w@h",
            "timestamp": 0,
            "runtime": 0.25,
            "result": "'ok'",
        }
    )
    assert "task-succeeded" in line and "shop.tasks.send[abc] on w@h" in line
    assert "runtime=0.25" in line and "result='ok'" in line


def test_an_event_is_cut_to_fit_a_notify():
    event = {"type": "task-failed", "uuid": "x", "traceback": "t" * 20000, "args": "a" * 9000}
    text = events.encode(event, limit=NOTIFY_LIMIT)
    assert len(text.encode()) <= NOTIFY_LIMIT and json.loads(text)["uuid"] == "x"


def test_on_sqlite_and_mariadb_there_are_no_events(settings, start_worker):
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL carries events (NOTIFY)")
    settings.TQ = {**settings.TQ, "BROKER_URL": "django://"}
    with pytest.raises(CommandError, match="no task events on django://"):
        call_command("tqevents", "--duration", "0.1")
    worker = start_worker("-E", "-P", "solo")
    assert "Task events (-E) are not sent on django://" in worker.output()
