"""``tqinspect reserved|scheduled``: what real workers' consumers hold and do not run yet."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import call_command

from django_tq import control, states
from django_tq.models import TaskResult
from tests.conftest import wait_for
from tests.testapp.tasks import record, slow_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(child) for child in handle.read().split()]


@pytest.mark.parametrize("broker_url", ["django", "redis"], indirect=True)
def test_reserved_lists_the_prefetched_messages_of_a_busy_child(
    broker_url, queue_name, start_worker
):
    busy = slow_record.delay(30, "busy")
    queued = [record.delay(f"<b>queued{i}</b>") for i in range(3)]
    worker = start_worker(
        "-n", "held@test", "-P", "prefork", "-c", "1", "--prefetch-multiplier", "4"
    )
    wait_for(
        lambda: TaskResult.objects.filter(task_id=busy.id, state=states.STARTED).exists(),
        30,
        what="the slow task running",
    )

    reserved = control.inspect(["held@test"], timeout=5).reserved()["held@test"]

    assert [task["id"] for task in reserved] == [r.id for r in queued]  # in the order they run
    (child,) = _children(worker.pid)
    for index, task in enumerate(reserved):
        assert task["name"] == "tests.testapp.tasks.record"
        assert task["args"] == repr([f"<b>queued{index}</b>"]) and task["kwargs"] == "{}"
        assert task["pid"] == child and task["worker"] == "held@test"
        assert task["queue"] == queue_name
    assert control.inspect(["held@test"], timeout=5).scheduled() == {"held@test": []}
    out = _run("tqinspect", "reserved", "-d", "held@test", "--timeout", "5")
    assert "-> held@test: 3 item(s)" in out
    assert f"tests.testapp.tasks.record[{queued[0].id}] pid {child}" in out
    as_json = json.loads(_run("tqinspect", "reserved", "--json", "-d", "held@test"))
    assert [task["id"] for task in as_json["held@test"]] == [r.id for r in queued]


@pytest.mark.parametrize("broker_url", ["amqp"], indirect=True)
@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_scheduled_lists_an_eta_message_held_by_an_idle_worker(
    pool, broker_url, queue_name, settings, start_worker
):
    # django:// and redis:// keep a delayed message in the store until it is due (no worker
    # holds it); RabbitMQ delivers it at once and the consumer holds it until its ETA
    settings.TQ = {**settings.TQ, "ETA_HORIZON_SECONDS": 120}  # not parked in the database
    start_worker("-n", "eta@test", "-P", pool, "-c", "1")
    later = record.apply_async(("later",), countdown=60)
    eta = TaskResult.objects.get(task_id=later.id)

    def held() -> list[dict[str, object]]:
        return control.inspect(["eta@test"], timeout=5).scheduled().get("eta@test") or []

    (task,) = wait_for(held, 30, what="the ETA message held")
    assert task["id"] == later.id and task["name"] == "tests.testapp.tasks.record"
    assert task["args"] == "['later']" and task["queue"] == queue_name
    due = dt.datetime.fromisoformat(str(task["eta"]))
    assert abs((due - dt.datetime.now(dt.UTC)).total_seconds() - 60) < 5
    assert eta.state == states.QUEUED
    assert control.inspect(["eta@test"], timeout=5).reserved() == {"eta@test": []}
    out = _run("tqinspect", "scheduled", "-d", "eta@test", "--timeout", "5")
    assert f"tests.testapp.tasks.record[{later.id}]" in out and f"eta {task['eta']}" in out
