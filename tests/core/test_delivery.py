"""The whole path on every transport: enqueue, a real worker, results, bad input, crashes."""

from __future__ import annotations

import signal
import time

import pytest
from django.db import transaction

from django_tq import AsyncResult, states
from django_tq.broker import get_broker
from django_tq.exceptions import TaskError, WorkerLostError
from django_tq.message import TaskMessage, WireMessage, encode
from django_tq.models import DeadLetter, TaskResult
from tests.conftest import wait_for
from tests.testapp.models import Execution, Order
from tests.testapp.tasks import (
    add,
    hang_on_first_delivery,
    kill_my_process,
    kill_my_process_once,
    order_exists,
    record,
    slow_record,
    who_am_i,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


def test_task_runs_and_its_result_is_stored(broker_url, start_worker):
    start_worker("-P", "prefork", "-c", "2")
    result = add.delay(20, 22)
    assert result.get(timeout=20) == 42
    row = TaskResult.objects.get(task_id=result.id)
    assert row.state == states.SUCCESS
    assert row.worker.startswith("tq-")
    assert row.date_started is not None and row.date_done is not None


def test_rollback_publishes_nothing_and_commit_publishes_once(broker_url, start_worker):
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = record.delay("rolled-back")
        raise RuntimeError("rollback")
    with transaction.atomic():
        Order.objects.create(number="A-1")
        committed = order_exists.delay("A-1")
        assert committed.id  # usable at once, before the commit
    start_worker("-P", "solo")
    assert committed.get(timeout=20) is True  # the row was visible: published after commit
    marker = record.delay("after")
    marker.get(timeout=20)
    assert not Execution.objects.filter(label="rolled-back").exists()
    assert AsyncResult(rolled_back.id).state == states.PENDING  # the QUEUED row rolled back too


def test_known_id_is_queued_unknown_id_is_pending(broker_url):
    result = add.delay(1, 1)
    assert AsyncResult(result.id).state == states.QUEUED
    assert AsyncResult("no-such-id").state == states.PENDING


def test_warm_shutdown_finishes_the_running_task(broker_url, start_worker):
    worker = start_worker("-P", "prefork", "-c", "1")
    result = slow_record.delay(2.0, "warm")
    wait_for(lambda: Execution.objects.filter(label="start:warm").exists(), what="task start")
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(20) == 0, worker.output()
    assert Execution.objects.filter(label="end:warm").count() == 1
    assert AsyncResult(result.id).state == states.SUCCESS


def test_warm_shutdown_gives_back_prefetched_messages(broker_url, start_worker):
    worker = start_worker("-P", "solo", "--prefetch-multiplier", "8")
    first = slow_record.delay(1.5, "p0")
    rest = [record.delay(f"p{i}") for i in range(1, 6)]
    wait_for(lambda: Execution.objects.filter(label="start:p0").exists(), what="task start")
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(20) == 0, worker.output()
    start_worker("-P", "solo")
    for result in [first, *rest]:
        result.get(timeout=30)
    labels = list(Execution.objects.values_list("label", flat=True))
    assert sorted(labels) == sorted(["start:p0", "end:p0", "p1", "p2", "p3", "p4", "p5"])


def test_killed_worker_task_is_completed_by_another(broker_url, settings, start_worker):
    settings.TQ = {**settings.TQ, "LEASE_SECONDS": 2}
    victim = start_worker("-P", "prefork", "-c", "1")
    # Not a task of a fixed length: on a loaded machine this test may reach the kill after it
    # ended (then it ran once, delivered once). Its first delivery hangs until it is killed.
    result = hang_on_first_delivery.delay("killed")
    wait_for(lambda: Execution.objects.filter(label="start:killed").exists(), what="task start")
    victim.kill_tree()
    start_worker("-P", "solo")
    assert result.get(timeout=30) == "killed"
    assert Execution.objects.filter(label="end:killed").count() == 1
    assert TaskResult.objects.get(task_id=result.id).delivery_count >= 2


def test_acked_message_never_comes_back(broker_url, settings, start_worker):
    settings.TQ = {**settings.TQ, "LEASE_SECONDS": 1}
    start_worker("-P", "solo")
    result = record.delay("once")
    result.get(timeout=20)
    time.sleep(2.5)  # past the lease: an unacked message would be redelivered by now
    marker = record.delay("marker")
    marker.get(timeout=20)
    assert Execution.objects.filter(label="once").count() == 1


def _publish_raw(wire: WireMessage, queue: str) -> None:
    get_broker().publish(wire, queue=queue)


def test_bad_messages_are_dead_lettered_and_the_worker_survives(broker_url, settings, start_worker):
    settings.TQ = {**settings.TQ, "MAX_PAYLOAD_BYTES": 4096}
    queue = settings.TQ["DEFAULT_QUEUE"]
    worker = start_worker("-P", "solo")
    good = encode(
        TaskMessage(id="malformed-1", task="tests.testapp.tasks.add", args=(1, 2), queue=queue)
    )
    _publish_raw(
        WireMessage(headers=good.headers, body="{not json", content_type=good.content_type), queue
    )
    unknown = encode(
        TaskMessage(id="unknown-1", task="tests.testapp.tasks.no_such_task", queue=queue)
    )
    _publish_raw(unknown, queue)
    pickled = encode(
        TaskMessage(
            id="pickle-1",
            task="tests.testapp.tasks.add",
            args=(1, 2),
            queue=queue,
            serializer="pickle",
        )
    )
    _publish_raw(pickled, queue)
    _publish_raw(
        WireMessage(headers={"not": "ours"}, body="hello", content_type="text/plain"), queue
    )
    arity = encode(
        TaskMessage(id="arity-1", task="tests.testapp.tasks.add", args=(1, 2, 3), queue=queue)
    )
    _publish_raw(arity, queue)
    oversize = encode(  # from a producer with a larger limit, or none
        TaskMessage(id="oversize-1", task="tests.testapp.tasks.echo_types", args=("x" * 5000,))
    )
    _publish_raw(oversize, queue)
    after = add.delay(2, 2)
    assert after.get(timeout=20) == 4  # the worker is still consuming
    wait_for(lambda: DeadLetter.objects.count() == 6, what="6 dead letters")
    reasons = {letter.task_id: letter.reason for letter in DeadLetter.objects.all()}
    assert "malformed JSON" in reasons["malformed-1"]
    assert "unknown task" in reasons["unknown-1"]
    assert "not accepted" in reasons["pickle-1"]
    assert "signature: too many positional arguments" in reasons["arity-1"]
    assert "not a django_tq message" in reasons[None]
    assert "over TQ['MAX_PAYLOAD_BYTES'] (4096)" in reasons["oversize-1"]
    assert "x" * 5000 in DeadLetter.objects.get(task_id="oversize-1").payload  # kept whole
    for task_id in ("malformed-1", "unknown-1", "pickle-1", "arity-1", "oversize-1"):
        assert AsyncResult(task_id).state == states.DEAD
    with pytest.raises(TaskError, match="dead-lettered: unknown task"):
        AsyncResult("unknown-1").get(timeout=1)
    assert worker.process.poll() is None


def test_routing_sends_tasks_to_their_queue(broker_url, settings, start_worker):
    other = settings.TQ["DEFAULT_QUEUE"] + "-other"
    settings.TQ = {**settings.TQ, "TASK_ROUTES": {"tests.testapp.tasks.who_*": {"queue": other}}}
    routed = who_am_i.delay()
    assert TaskResult.objects.get(task_id=routed.id).queue == other
    default_worker = start_worker("-P", "solo")
    plain = add.delay(1, 2)
    assert plain.get(timeout=20) == 3
    assert AsyncResult(routed.id).state == states.QUEUED  # nobody consumes `other` yet
    default_worker.stop()
    start_worker("-P", "solo", "-Q", other)
    assert routed.get(timeout=20)["queue"] == other


def test_priority_nine_runs_first(broker_url, start_worker):
    low = [record.apply_async(("low",), priority=0) for _ in range(3)]
    high = record.apply_async(("high",), priority=9)
    start_worker("-P", "solo", "--prefetch-multiplier", "1")
    for result in [*low, high]:
        result.get(timeout=20)
    assert Execution.objects.order_by("id").first().label == "high"


def test_a_waiting_eta_message_does_not_block_due_ones(broker_url, start_worker):
    start_worker("-P", "solo", "--prefetch-multiplier", "1")
    # Due long after the others could have waited for it (a 3 s countdown was not, on a loaded
    # machine: the three ran after it). That it runs at its ETA: test_countdown_delays_the_task.
    later = record.apply_async(("later",), countdown=25)  # not parked: under ETA_HORIZON_SECONDS
    now = [record.delay(f"now{i}") for i in range(3)]
    for result in now:
        result.get(timeout=20)
    assert AsyncResult(later.id).state == states.QUEUED
    assert not Execution.objects.filter(label="later").exists()


def test_countdown_delays_the_task(broker_url, start_worker):
    start_worker("-P", "solo")
    sent = time.monotonic()
    result = record.apply_async(("later",), countdown=1.5)
    result.get(timeout=20)
    assert time.monotonic() - sent >= 1.4


def test_a_poison_message_is_dead_after_max_deliveries(broker_url, settings, start_worker):
    assert_a_poison_message_dies_alone(settings, start_worker)


def assert_a_poison_message_dies_alone(settings, start_worker) -> None:
    """A message killing its worker runs MAX_DELIVERIES (3) times, then is DEAD; 5 others run."""
    settings.TQ = {**settings.TQ, "MAX_DELIVERIES": 3, "LEASE_SECONDS": 2}
    start_worker("-P", "prefork", "-c", "1")
    poison = kill_my_process.delay()
    others = [record.delay(f"ok{i}") for i in range(5)]
    for result in others:
        result.get(timeout=60)
    with pytest.raises(TaskError, match="delivered 4 times"):
        poison.get(timeout=60)
    assert Execution.objects.filter(label="poison").count() == 3  # at most MAX_DELIVERIES runs
    assert Execution.objects.filter(label__startswith="ok").count() == 5
    assert DeadLetter.objects.get(task_id=poison.id).reason.startswith("delivered 4 times")


def test_reject_on_worker_lost_false_fails_the_task_instead_of_running_it_again(
    broker_url, settings, start_worker
):
    settings.TQ = {**settings.TQ, "LEASE_SECONDS": 2}
    start_worker("-P", "prefork", "-c", "1")
    lost = kill_my_process_once.delay()
    others = [record.delay(f"ok{i}") for i in range(3)]
    with pytest.raises(WorkerLostError, match="died"):
        lost.get(timeout=60)
    for result in others:
        result.get(timeout=60)
    assert Execution.objects.filter(label="lost").count() == 1  # never run again
    assert AsyncResult(lost.id).state == states.FAILURE


def test_a_second_copy_of_a_finished_task_is_skipped(broker_url, start_worker):
    first = record.delay("copy")
    start_worker("-P", "solo")
    assert first.get(timeout=20) == "copy"
    # A crash between recording the result and acking (or a beat/parking race) sends it again.
    copy = record.apply_async(("copy",), task_id=first.id)
    marker = add.delay(1, 1)
    assert marker.get(timeout=20) == 2
    wait_for(lambda: AsyncResult(copy.id).state == states.SUCCESS, what="state kept")
    assert Execution.objects.filter(label="copy").count() == 1


def _queue_exists(name: str) -> bool:
    broker = get_broker()
    with broker.connection() as conn:
        try:
            broker.queue(name)(conn.default_channel).queue_declare(passive=True)
        except conn.channel_errors:
            return False
        return True


def test_reading_a_depth_never_creates_the_queue(broker_url, queue_name):
    broker = get_broker()
    missing = f"{queue_name}-other"  # deleted after the test on real brokers
    assert broker.depth(missing) == 0
    if not broker.is_database:  # a table has every queue; a broker must not get a new one
        assert not _queue_exists(missing)
    add.apply_async((1, 2), queue=missing)
    assert broker.depth(missing) == 1
