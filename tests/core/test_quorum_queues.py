"""RabbitMQ quorum queues, per queue: declared with ``x-delivery-limit = MAX_DELIVERIES``.

On the shared RabbitMQ, with queues of the test's own (deleted afterwards). The worker counts a
poison message's deliveries from its result row as on a classic queue (the broker's
``x-delivery-count`` also counts the prefetched messages a dying child gave back, which must not
be dead-lettered); the broker's limit is the backstop behind it. What the broker takes off at its
limit goes to ``<queue>.delivery-limit``, which the worker reads back: an innocent message runs
again, a poison one (or one whose runs are not recorded) becomes a DeadLetter — never dropped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from amqp.exceptions import PreconditionFailed
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from kombu import Queue

from django_tq import AsyncResult, queues, states
from django_tq.broker import ALL_QUEUES, Broker, delivery_limit, get_broker, quorum_queue_names
from django_tq.exceptions import PublishError
from django_tq.exchanges import Broadcast
from django_tq.message import TaskMessage, WireMessage
from django_tq.models import DeadLetter, TaskResult, WorkerState
from django_tq.result_backends import get_backend
from django_tq.worker.delivery_limit import DeliveryLimitRescue
from django_tq.worker.worker import Worker, WorkerConfig
from tests.conftest import AMQP_URL, command_output, delete_queues, require_service, wait_for
from tests.core.test_delivery import assert_a_poison_message_dies_alone
from tests.testapp.models import Execution
from tests.testapp.tasks import add, kill_my_process, record


def test_the_option_names_queues_or_all() -> None:
    assert quorum_queue_names(["a", "b"]) == {"a", "b"}
    assert quorum_queue_names("a,b") == {"a", "b"}
    assert quorum_queue_names(True) is ALL_QUEUES
    assert quorum_queue_names(None) == frozenset()
    with pytest.raises(ImproperlyConfigured, match="quorum_queues"):
        quorum_queue_names(3)
    broker = Broker("redis://127.0.0.1:1/0", transport_options={"quorum_queues": True})
    assert not broker.is_quorum("a")  # an AMQP option only
    assert "quorum_queues" not in broker.transport_options  # not handed to kombu


@pytest.fixture
def quorum_queue(queue_name: str, settings: Any) -> Iterator[str]:
    """A quorum queue of this test's own on the shared RabbitMQ, as the default queue."""
    require_service("RabbitMQ", 5672)
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": AMQP_URL,
        "BROKER_TRANSPORT_OPTIONS": {"quorum_queues": [queue_name]},
        "DEFAULT_QUEUE": queue_name,
    }
    yield queue_name
    delete_queues(AMQP_URL, [queue_name, delivery_limit.queue_name(queue_name)])


def test_a_named_queue_is_declared_quorum_with_the_delivery_limit(quorum_queue, settings) -> None:
    broker = Broker(AMQP_URL, transport_options={"quorum_queues": [quorum_queue]})
    assert broker.queue(quorum_queue).queue_arguments == {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.TQ.get("MAX_DELIVERIES", 4),
        "x-dead-letter-exchange": "django_tq.delivery-limit",
        "x-dead-letter-routing-key": quorum_queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert broker.queue("other").queue_arguments == {"x-max-priority": 10}
    broker.publish(WireMessage(headers={}, body="x", content_type="text/plain"), queue=quorum_queue)
    assert broker.depth(quorum_queue) == 1
    with (
        broker.connection() as connection,
        pytest.raises(PreconditionFailed, match="inequivalent arg"),
    ):
        # the broker holds a quorum queue: declaring it classic is refused
        Queue(quorum_queue, durable=True)(connection.default_channel).declare()


@pytest.mark.django_db(transaction=True)
def test_a_poison_message_is_dead_after_max_deliveries_and_its_neighbours_run(
    quorum_queue, settings, start_worker
) -> None:
    assert_a_poison_message_dies_alone(settings, start_worker)  # the prefetched ones not dropped


def bounce_until_gone(name: str, timeout: float = 20.0) -> int:
    """Take each message of ``name`` and give it back until RabbitMQ takes them off; return
    how many returns that took (each counts towards the delivery limit)."""
    returns = 0
    deadline = time.monotonic() + timeout
    with get_broker().connection() as connection:
        channel = connection.channel()
        while (message := channel.basic_get(queue=name, no_ack=False)) is not None:
            channel.basic_reject(message.delivery_tag, requeue=True)
            returns += 1
            assert time.monotonic() < deadline, f"{name} kept its messages"
    return returns


def dead_lettered(name: str) -> int:
    return get_broker().depth(delivery_limit.queue_name(name))


@pytest.fixture
def rescue(quorum_queue: str) -> Iterator[DeliveryLimitRescue]:
    rescue = DeliveryLimitRescue(get_broker(), [quorum_queue], hostname="rescuer")
    yield rescue
    rescue.close()


@pytest.mark.django_db(transaction=True)
def test_what_the_broker_takes_off_at_its_limit_runs_again_or_is_a_dead_letter(
    quorum_queue, settings, rescue
) -> None:
    settings.TQ = {**settings.TQ, "MAX_DELIVERIES": 2}
    rescue.queues.take()  # declares <queue>.delivery-limit, as a worker's housekeeping does
    innocent = record.delay("innocent")  # only prefetched: its row stays QUEUED
    poison = add.delay(1, 2)  # started twice (MAX_DELIVERIES) and never finished
    get_backend().mark_started(
        TaskMessage(id=poison.id, task="tests.testapp.tasks.add", queue=quorum_queue),
        worker="gone",
        delivery_count=2,
    )
    unrecorded = add.apply_async((2, 3), ignore_result=True)  # nothing tells how often it ran
    expired = add.delay(3, 4)  # its row is gone (expired, deleted): the same
    TaskResult.objects.filter(task_id=expired.id).delete()
    assert bounce_until_gone(quorum_queue) == 4 * 3  # dropped on its third return
    wait_for(lambda: dead_lettered(quorum_queue) == 4, what="at-least-once dead-lettering")

    assert rescue.tick(0.0) == 4
    assert rescue.tick(0.5) == 0  # not due yet
    assert dead_lettered(quorum_queue) == 0  # all acked
    letters = {letter.task_id: letter for letter in DeadLetter.objects.all()}
    assert set(letters) == {poison.id, unrecorded.id, expired.id}
    assert letters[poison.id].reason.startswith("delivery limit: RabbitMQ took it off")
    assert "started 2 times without finishing" in letters[poison.id].reason
    assert letters[poison.id].queue == quorum_queue
    assert "not recorded" in letters[unrecorded.id].reason
    assert "not recorded" in letters[expired.id].reason
    assert AsyncResult(poison.id).state == states.DEAD
    # the innocent one is back on its queue as a new message, without RabbitMQ's death headers
    assert get_broker().depth(quorum_queue) == 1
    with get_broker().connection() as connection:
        message = connection.channel().basic_get(queue=quorum_queue, no_ack=True)
    assert message.headers["id"] == innocent.id
    assert not set(message.headers) & (delivery_limit.DEATH_HEADERS - {"x-delivery-count"})
    assert message.headers.get("x-delivery-count", 0) == 0  # a new message: its count is 0
    assert AsyncResult(innocent.id).state == states.QUEUED


@pytest.mark.django_db(transaction=True)
def test_the_worker_s_housekeeping_reads_its_quorum_queues_back(quorum_queue, settings) -> None:
    settings.TQ = {**settings.TQ, "MAX_DELIVERIES": 1}
    config = WorkerConfig(queues=(quorum_queue,), concurrency=1, pool="threads")
    worker = Worker(get_broker(), config)
    assert worker.delivery_limit is not None
    try:
        worker.tick(1000.0)  # declares <queue>.delivery-limit
        innocent = record.delay("innocent")
        assert bounce_until_gone(quorum_queue) == 2
        wait_for(lambda: dead_lettered(quorum_queue) == 1, what="at-least-once dead-lettering")
        worker.tick(1001.0)
        assert get_broker().depth(quorum_queue) == 1  # published again
        assert AsyncResult(innocent.id).state == states.QUEUED
        worker.consume(("default",))  # add_consumer/cancel_consumer: not a quorum queue
        assert worker.delivery_limit is None
    finally:
        if worker.delivery_limit is not None:
            worker.delivery_limit.close()


@pytest.mark.django_db(transaction=True)
def test_a_signed_message_redelivered_by_a_quorum_queue_still_verifies(
    quorum_queue, settings, start_worker
) -> None:
    """RabbitMQ adds ``x-delivery-count`` to a quorum queue's redelivery (and ``x-death`` to a
    dead-lettered message), after the signing: neither may make it a "bad signature"."""
    settings.TQ = {**settings.TQ, "SIGNING": True}
    result = add.delay(20, 22)
    # one return: the redelivery carries x-delivery-count 1
    with get_broker().connection() as connection:
        channel = connection.channel()
        message = wait_for(lambda: channel.basic_get(queue=quorum_queue, no_ack=False))
        channel.basic_reject(message.delivery_tag, requeue=True)
    start_worker("-P", "solo")
    assert result.get(timeout=30) == 42
    assert not DeadLetter.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_without_track_started_a_message_at_the_limit_is_a_dead_letter(
    quorum_queue, settings, rescue
) -> None:
    """QUEUED may then mean "started and died": published again, a poison would never stop."""
    settings.TQ = {**settings.TQ, "MAX_DELIVERIES": 1, "TRACK_STARTED": False}
    rescue.queues.take()
    unknown = record.delay("maybe poison")
    assert bounce_until_gone(quorum_queue) == 2
    wait_for(lambda: dead_lettered(quorum_queue) == 1, what="at-least-once dead-lettering")
    assert rescue.tick(0.0) == 1
    assert "not recorded" in DeadLetter.objects.get(task_id=unknown.id).reason
    assert AsyncResult(unknown.id).state == states.DEAD
    assert get_broker().depth(quorum_queue) == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_neighbours_prefetched_through_more_crashes_than_the_limit_are_not_dropped(
    quorum_queue, settings, start_worker
) -> None:
    """Three poison messages kill the child six times; its prefetched neighbours come back
    each time, beyond x-delivery-limit. RabbitMQ dropped them silently before: now each runs."""
    settings.TQ = {**settings.TQ, "MAX_DELIVERIES": 2, "LEASE_SECONDS": 2}
    poisons = [kill_my_process.delay() for _ in range(3)]
    neighbours = [record.delay(f"ok{i}") for i in range(4)]
    # started after the publishes: the one child prefetches all seven, every time
    start_worker("-P", "prefork", "-c", "1", "--prefetch-multiplier", "8")
    for result in neighbours:
        assert result.get(timeout=90).startswith("ok")
    for poison in poisons:
        wait_for(lambda p=poison: AsyncResult(p.id).state == states.DEAD, timeout=60)
    assert Execution.objects.filter(label__startswith="ok").count() == 4  # each once
    assert Execution.objects.filter(label="poison").count() <= 3 * 2  # MAX_DELIVERIES each
    assert set(DeadLetter.objects.values_list("task_id", flat=True)) == {p.id for p in poisons}
    assert get_broker().depth(quorum_queue) == 0
    assert dead_lettered(quorum_queue) == 0


def rabbitmqctl(*args: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed")
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"rabbitmqctl cannot reach the node: {done.stderr.strip()[:200]}")


@pytest.mark.slow  # rabbitmqctl starts an Erlang VM each time
@pytest.mark.django_db(transaction=True)
def test_a_quorum_queue_declared_without_dead_letters_is_refused_clearly_then_upgraded(
    quorum_queue, settings
) -> None:
    """A quorum queue an earlier version declared: its arguments cannot change. Named in
    ``legacy_quorum_queues`` it is declared as it was, and a policy gives it the dead letters."""
    settings.TQ = {**settings.TQ, "MAX_DELIVERIES": 1}
    old = delivery_limit.source_arguments(1, quorum_queue, legacy=True)
    with get_broker().connection() as connection:
        Queue(quorum_queue, queue_arguments=old, durable=True)(connection.channel()).declare()
    current = DeliveryLimitRescue(get_broker(), [quorum_queue], hostname="rescuer")
    with pytest.raises(PreconditionFailed, match="x-dead-letter-exchange"):
        current.tick(0.0)  # the worker's housekeeping logs this, with RabbitMQ's reason
    current.close()

    options = {"quorum_queues": [quorum_queue], "legacy_quorum_queues": [quorum_queue]}
    settings.TQ = {**settings.TQ, "BROKER_TRANSPORT_OPTIONS": options}
    assert get_broker().queue(quorum_queue).queue_arguments == old
    policy = f"tq-dl-{quorum_queue}"
    definition = json.dumps(delivery_limit.policy_definition(quorum_queue))
    rabbitmqctl("set_policy", "--apply-to", "queues", policy, f"^{quorum_queue}$", definition)
    try:
        rescue = DeliveryLimitRescue(get_broker(), [quorum_queue], hostname="rescuer")
        rescue.queues.take()  # declares both: no PRECONDITION_FAILED now
        innocent = record.delay("legacy")
        assert bounce_until_gone(quorum_queue) == 2
        wait_for(lambda: dead_lettered(quorum_queue) == 1, what="the policy's dead-lettering")
        assert rescue.tick(0.0) == 1
        rescue.close()
        assert get_broker().depth(quorum_queue) == 1  # back, to run
        assert not DeadLetter.objects.filter(task_id=innocent.id).exists()
    finally:
        rabbitmqctl("clear_policy", policy)


def test_every_queue_quorum_leaves_a_worker_s_broadcast_copy_classic(queue_name, settings) -> None:
    """A Broadcast queue's per-worker copy is deleted with its last consumer: a quorum queue
    cannot be (auto-delete is refused), so ``quorum_queues=True`` leaves the copies classic."""
    require_service("RabbitMQ", 5672)
    settings.TQ = {**settings.TQ, "QUEUES": ["default", Broadcast(queue_name)]}
    broker = Broker(AMQP_URL, transport_options={"quorum_queues": True})
    copy = f"{queue_name}.w1@host"
    assert broker.is_quorum("default")
    assert not broker.is_quorum(copy)
    assert "x-queue-type" not in broker.queue(copy).queue_arguments
    try:
        with broker.connection() as connection:
            broker.queue(copy)(connection.channel()).declare()  # not PRECONDITION_FAILED
    finally:
        delete_queues(AMQP_URL, [copy])


def at_the_limit(quorum_queue: str, rescue: DeliveryLimitRescue, settings: Any) -> str:
    """Return the id of an innocent task RabbitMQ took off ``quorum_queue`` at its limit."""
    settings.TQ = {**settings.TQ, "MAX_DELIVERIES": 1}
    rescue.queues.take()  # declares <queue>.delivery-limit, as a worker's housekeeping does
    innocent = record.delay("innocent")
    assert bounce_until_gone(quorum_queue) == 2
    wait_for(lambda: dead_lettered(quorum_queue) == 1, what="at-least-once dead-lettering")
    return innocent.id


def delete_source(name: str) -> None:
    with get_broker().connection() as connection:
        connection.default_channel.queue_delete(name)


@pytest.mark.django_db(transaction=True)
def test_a_message_published_again_to_a_deleted_queue_is_not_lost(
    quorum_queue, settings, rescue
) -> None:
    """RabbitMQ acks a message no queue takes: the republish is mandatory, the queue declared
    again when the message comes back (``basic.return``)."""
    innocent = at_the_limit(quorum_queue, rescue, settings)
    delete_source(quorum_queue)  # between the worker's declare and its republish
    assert rescue.tick(0.0) == 1
    assert dead_lettered(quorum_queue) == 0
    assert get_broker().depth(quorum_queue) == 1
    with get_broker().connection() as connection:
        message = connection.channel().basic_get(queue=quorum_queue, no_ack=True)
    assert message.headers["id"] == innocent


@pytest.mark.django_db(transaction=True)
def test_a_republish_no_queue_takes_leaves_the_message_at_the_limit(
    quorum_queue, settings, rescue, monkeypatch
) -> None:
    innocent = at_the_limit(quorum_queue, rescue, settings)
    delete_source(quorum_queue)
    monkeypatch.setattr(rescue.queues, "_declare_source", lambda source: None)  # stays gone
    with pytest.raises(PublishError, match=r"routed .* to no queue"):
        rescue.tick(0.0)
    assert dead_lettered(quorum_queue) == 1  # not acked: given back when the channel closed
    monkeypatch.undo()
    assert rescue.tick(10.0) == 1
    assert get_broker().depth(quorum_queue) == 1
    assert AsyncResult(innocent).state == states.QUEUED


# -- what the cluster views and tqpurge make of <queue>.delivery-limit --------------------------
@pytest.mark.django_db(transaction=True)
def test_the_queue_overview_shows_what_waits_at_the_delivery_limit(
    quorum_queue, settings, rescue
) -> None:
    at_the_limit(quorum_queue, rescue, settings)
    record.delay("waiting")
    now = timezone.now()
    WorkerState.objects.create(
        hostname="reader@host",
        pid=1,
        queues=[quorum_queue],
        pool="solo",
        concurrency=1,
        started_at=now,
        last_heartbeat=now,
    )
    rows = {info.name: info for info in queues.overview(now)}
    limit_queue = delivery_limit.queue_name(quorum_queue)
    assert (rows[quorum_queue].depth, rows[quorum_queue].workers) == (1, 1)
    # a row of its own (not work a consumer takes), read back by the quorum queue's workers
    assert (rows[limit_queue].depth, rows[limit_queue].workers) == (1, 1)
    assert get_broker().delivery_limit_queue(limit_queue) is None  # no .delivery-limit of its own
    assert get_broker().delivery_limit_queue("default") is None  # not a quorum queue


@pytest.mark.django_db(transaction=True)
def test_purge_of_a_quorum_queue_revokes_what_waits_at_its_delivery_limit(
    quorum_queue, settings, rescue
) -> None:
    at_limit = at_the_limit(quorum_queue, rescue, settings)
    waiting = record.delay("waiting").id
    rescue.close()  # as a stopped worker: nothing held
    limit_queue = delivery_limit.queue_name(quorum_queue)
    out = command_output("tqpurge", "-Q", quorum_queue, "--force")
    assert f"{quorum_queue}: 1 waiting, 0 parked, 1 in {limit_queue}, 2 QUEUED" in out
    assert "Purged 2 message(s)" in out and "(2 revoked" in out
    for task_id in (at_limit, waiting):
        result = AsyncResult(task_id)
        assert result.state == states.REVOKED and result.result == {"reason": "purged"}
    assert dead_lettered(quorum_queue) == 0
    assert get_broker().depth(quorum_queue) == 0
    assert rescue.tick(10.0) == 0  # nothing comes back on the queue


@pytest.mark.django_db(transaction=True)
def test_discard_empties_the_delivery_limit_queue_too(quorum_queue, settings, rescue) -> None:
    at_limit = at_the_limit(quorum_queue, rescue, settings)
    rescue.close()
    out = command_output("tqpurge", "-Q", quorum_queue, "--force", "--discard")
    assert "1 discarded unread" in out
    assert dead_lettered(quorum_queue) == 0
    assert AsyncResult(at_limit).state == states.REVOKED  # step 4: its QUEUED result


@pytest.mark.django_db(transaction=True)
def test_a_worker_s_purge_empties_the_delivery_limit_queue(quorum_queue, settings, rescue) -> None:
    """``tqworker --purge`` discards through ``Broker.purge``: one at the limit, one waiting."""
    at_the_limit(quorum_queue, rescue, settings)
    record.delay("waiting")
    rescue.close()
    assert get_broker().purge([quorum_queue]) == 2
    assert dead_lettered(quorum_queue) == 0
    assert get_broker().depth(quorum_queue) == 0


def test_only_the_quorum_queues_we_declare_have_a_delivery_limit_queue() -> None:
    broker = Broker(AMQP_URL, transport_options={"quorum_queues": ["ours"]})
    broker.found_quorum_queues.add("celerys")  # found existing as quorum: no dead letters of ours
    assert broker.is_quorum("celerys")
    assert broker.delivery_limit_queue("celerys") is None
    assert broker.delivery_limit_queue("ours") == "ours.delivery-limit"
    assert broker.queue("ours.delivery-limit").queue_arguments == {"x-queue-type": "quorum"}
    every = Broker(AMQP_URL, transport_options={"quorum_queues": True})
    assert every.delivery_limit_queue("a") == "a.delivery-limit"
    assert every.delivery_limit_queue("a.delivery-limit") is None  # not one of its own
