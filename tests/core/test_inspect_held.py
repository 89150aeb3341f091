"""``tqinspect reserved|scheduled``: what real workers' consumers hold and do not run yet."""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import time

import pytest
from django.core.management import call_command
from kombu import Message

from django_tq import control, states, waiting
from django_tq import message as wire_format
from django_tq.broker import Broker
from django_tq.broker.delivery import Delivery
from django_tq.message import TaskMessage
from django_tq.models import TaskResult
from django_tq.worker import inventory
from django_tq.worker.consumer import Consumer, ConsumerConfig
from django_tq.worker.pool import ANSWER_BYTES, Slot
from tests.conftest import child_pids, command_output, wait_for
from tests.testapp.tasks import record, slow_record


@pytest.mark.django_db(transaction=True)
@pytest.mark.db
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
    (child,) = child_pids(worker.pid)
    for index, task in enumerate(reserved):
        assert task["name"] == "tests.testapp.tasks.record"
        assert task["args"] == repr([f"<b>queued{index}</b>"]) and task["kwargs"] == "{}"
        assert task["pid"] == child and task["worker"] == "held@test"
        assert task["queue"] == queue_name
    assert control.inspect(["held@test"], timeout=5).scheduled() == {"held@test": []}
    out = command_output("tqinspect", "reserved", "-d", "held@test", "--timeout", "5")
    assert "-> held@test: 3 item(s)" in out
    assert f"tests.testapp.tasks.record[{queued[0].id}] pid {child}" in out
    as_json = json.loads(command_output("tqinspect", "reserved", "--json", "-d", "held@test"))
    assert [task["id"] for task in as_json["held@test"]] == [r.id for r in queued]


@pytest.mark.django_db(transaction=True)
@pytest.mark.db
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
    out = command_output("tqinspect", "scheduled", "-d", "eta@test", "--timeout", "5")
    assert f"tests.testapp.tasks.record[{later.id}]" in out and f"eta {task['eta']}" in out


# -- the consumer's side, in-process --------------------------------------------------------------
def _held_consumer(count: int) -> Consumer:
    consumer = Consumer(
        Broker("django://"), ConsumerConfig(queues=("q",), prefetch=1, hostname="h@test")
    )
    now = time.time()
    for index in range(count):
        message = TaskMessage(
            id=f"id-{index:04}",
            task="tests.testapp.tasks.record",
            args=("x" * 300,),
            eta=dt.datetime.fromtimestamp(now + 60 + index, dt.UTC),
        )
        raw = Message(body="{}", delivery_tag=index, headers={}, properties={}, delivery_info={})
        consumer.holding.hold(now + 60 + index, Delivery(raw, "q"), message)
    limited = TaskMessage(id="limited", task="tests.testapp.tasks.limited", kwargs={"label": "a"})
    raw = Message(body="{}", delivery_tag="t", headers={}, properties={}, delivery_info={})
    consumer.holding.throttle(now + 1, Delivery(raw, "q"), limited)
    return consumer


@pytest.mark.parametrize("shared", [True, False])
def test_a_slot_carries_the_answer_and_a_long_one_is_cut_and_counted(shared):
    consumer = _held_consumer(500)
    slot = Slot(shared=shared)
    slot.serve(functools.partial(inventory.answer, consumer))
    question = slot.ask()
    raw = wait_for(lambda: slot.answer_to(question), 5, what="the answer")
    assert slot.answer_to(question + 1) is None  # not asked yet
    answer = inventory.read(raw)
    assert len(raw) < ANSWER_BYTES and answer["left_off"] > 0
    ids = [task["id"] for task in answer["scheduled"]]
    assert ids == sorted(ids) and ids[0] == "id-0000"  # the soonest kept, by ETA
    assert len(ids) + answer["left_off"] == 500
    assert all(len(task["args"]) <= wire_format.ARGS_SHOWN for task in answer["scheduled"])
    (limited,) = answer["reserved"]
    assert limited["id"] == "limited" and limited["rate_limited_until"]
    assert limited["kwargs"] == "{'label': 'a'}" and "eta" not in limited


def test_an_answer_that_does_not_parse_reads_as_nothing():
    assert inventory.read(b"{half") == {} and inventory.read(b"[1]") == {}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker_url", ["django", "redis"], indirect=True)
def test_scheduled_also_lists_what_waits_in_the_store_and_the_parking_table(broker_url):
    soon = record.apply_async(("soon",), countdown=20)  # within the ETA horizon: in the store
    later = record.apply_async(("later",), countdown=3600)  # beyond it: parked
    waits = waiting.scheduled()
    assert [(task["id"], task["where"]) for task in waits] == [
        (soon.id, "queue"),
        (later.id, "parked"),
    ]
    assert waits[0]["name"] == record.name and waits[0]["args"] == "['soon']"
    assert waits[0]["eta"] < waits[1]["eta"]
    with pytest.raises(SystemExit) as exit:  # no worker answers: status 1, the list printed first
        out = io.StringIO()
        call_command("tqinspect", "scheduled", "--timeout", "0.5", stdout=out, stderr=io.StringIO())
    assert exit.value.code == 1
    assert f"{record.name}[{soon.id}] queue " in out.getvalue()
    assert "(parked)" in out.getvalue() and "(queue)" in out.getvalue()
