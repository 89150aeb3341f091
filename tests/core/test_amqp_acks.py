"""RabbitMQ acks in batches: one ``basic.ack(multiple=True)`` for the finished prefix only.

A multiple ack settles every unsettled delivery of the channel up to its tag, so it must never
cover a message held for its ETA, one still running or one given back. The unit tests drive
:class:`AckWindow` with a channel that records what it is sent; the others use RabbitMQ.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from django_tq.broker import Broker
from django_tq.broker.amqp_acks import AckWindow
from django_tq.broker.delivery import Delivery
from django_tq.message import WireMessage
from tests.conftest import AMQP_URL, delete_queues, require_service, wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import early_ack_then_die, slow_record


class RecordingChannel:
    """What :class:`AckWindow` sends, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bool]] = []

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.sent.append((delivery_tag, multiple))


def window(batch: int = 100, delay: float = 60.0) -> tuple[AckWindow, RecordingChannel]:
    channel = RecordingChannel()
    return AckWindow(channel, batch=batch, delay=delay), channel


def test_a_multiple_ack_covers_the_finished_prefix_and_no_further() -> None:
    acks, channel = window()
    for tag in range(1, 6):
        acks.delivered(tag)
    for tag in (1, 2, 4, 5):  # 3 is held (an ETA) or still running
        acks.ack(tag)
    assert channel.sent == []  # waiting for the batch
    acks.flush()
    assert channel.sent == [(2, True), (4, False), (5, False)]
    acks.ack(3)
    acks.flush()
    assert channel.sent[3:] == [(3, True)]
    assert acks.waiting == 0


def test_a_delivery_given_back_is_never_covered_while_it_is_being_given_back() -> None:
    acks, channel = window()
    for tag in (1, 2, 3):
        acks.delivered(tag)
    acks.ack(1)
    acks.ack(3)
    acks.flush()  # 2 is being rejected (not settled() yet): the multiple ack stops before it
    assert channel.sent == [(1, True), (3, False)]
    acks.settled(2)  # basic.reject sent
    acks.delivered(4)
    acks.ack(4)
    acks.flush()
    assert channel.sent[2:] == [(4, True)]  # covers 2 and 3, settled already


def test_the_batch_goes_out_when_full_or_when_an_ack_must_go_now() -> None:
    acks, channel = window(batch=2)
    for tag in (1, 2, 3, 4):
        acks.delivered(tag)
    acks.ack(1)
    assert channel.sent == []
    acks.ack(2)
    assert channel.sent == [(2, True)]
    acks.ack(3, now=True)  # acks_late=False: sent before the task runs
    assert channel.sent == [(2, True), (3, True)]


def test_after_a_delivery_never_seen_every_ack_goes_alone() -> None:
    acks, channel = window()
    acks.delivered(1)
    acks.delivered(3)  # 2 never reached the consumer: a multiple ack of 3 would settle it
    acks.ack(1)
    acks.ack(3)
    acks.flush()
    assert channel.sent == [(1, False), (3, False)]


def test_an_ack_of_a_tag_not_seen_is_sent_at_once() -> None:
    acks, channel = window()
    acks.ack(7)
    assert channel.sent == [(7, False)]


def test_waiting_acks_are_sent_within_the_delay_when_nothing_else_sends_them() -> None:
    acks, channel = window(delay=0.02)
    acks.delivered(1)
    acks.ack(1)
    wait_for(lambda: channel.sent == [(1, True)], 5, interval=0.01, what="the flusher")
    acks.close()


# -- on RabbitMQ ---------------------------------------------------------------------------
@pytest.fixture
def amqp_queue(queue_name: str) -> Any:
    require_service("RabbitMQ", 5672)
    yield queue_name
    delete_queues(AMQP_URL, [queue_name])


def _publish(broker: Broker, queue: str, count: int) -> None:
    for index in range(count):
        broker.publish(
            WireMessage(headers={"id": str(index)}, body="{}", content_type="application/json"),
            queue=queue,
        )


def _take(
    broker: Broker, queue: str, count: int, handle: Any, *, prefetch: int = 10, **options: Any
) -> Any:
    """Subscribe, hand ``count`` deliveries to ``handle``, return the subscription (open)."""
    if options:
        broker = Broker(AMQP_URL, transport_options=options)
    got: list[Delivery] = []

    def on_delivery(delivery: Delivery) -> None:
        got.append(delivery)
        handle(delivery)

    subscription = broker.subscribe([queue], prefetch=prefetch, on_delivery=on_delivery)
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        subscription.drain(0.2)
    assert len(got) == count
    return subscription


def _ids_left(broker: Broker, queue: str, count: int) -> list[tuple[str, bool]]:
    """Return (id, redelivered) of what the queue hands out now (acked at once)."""
    seen: list[tuple[str, bool]] = []

    def ack(delivery: Delivery) -> None:
        seen.append((delivery.headers["id"], delivery.redelivered))
        delivery.ack()

    subscription = _take(broker, queue, count, ack)
    subscription.close()
    return seen


def test_a_held_delivery_before_finished_ones_comes_back_alone(amqp_queue: str) -> None:
    broker = Broker(AMQP_URL)
    _publish(broker, amqp_queue, 4)
    held: list[Delivery] = []

    def finish_all_but_the_first(delivery: Delivery) -> None:
        if delivery.headers["id"] == "0":
            held.append(delivery)  # an ETA message, held unacked
        else:
            delivery.ack()

    subscription = _take(broker, amqp_queue, 4, finish_all_but_the_first)
    subscription.close()  # sends the batch; the held one goes back with the connection
    assert _ids_left(broker, amqp_queue, 1) == [("0", True)]


def test_acks_not_sent_when_the_consumer_dies_are_redelivered(amqp_queue: str) -> None:
    broker = Broker(AMQP_URL)
    _publish(broker, amqp_queue, 3)
    finished: list[Delivery] = []
    subscription = _take(broker, amqp_queue, 3, finished.append, ack_batch_seconds=30)
    for delivery in finished:  # not in the drain: no idle wait sends them
        delivery.ack()
    assert subscription.acks is not None and subscription.acks.waiting == 3
    subscription.connection.connection.transport.sock.close()  # killed: nothing more is sent
    subscription.acks = None  # (what close() would flush)
    subscription.close()
    assert sorted(_ids_left(broker, amqp_queue, 3)) == [("0", True), ("1", True), ("2", True)]


def test_without_batching_each_ack_is_sent_before_it_returns(amqp_queue: str) -> None:
    broker = Broker(AMQP_URL, transport_options={"ack_batch_seconds": 0})
    _publish(broker, amqp_queue, 2)
    subscription = _take(broker, amqp_queue, 2, lambda delivery: delivery.ack())
    assert subscription.acks is None
    subscription.connection.connection.transport.sock.close()
    subscription.close()
    broker.publish(
        WireMessage(headers={"id": "new"}, body="{}", content_type="application/json"),
        queue=amqp_queue,
    )
    # the new one only (redelivered, maybe: the dead consumer may have been sent it first)
    assert [task_id for task_id, _ in _ids_left(broker, amqp_queue, 1)] == ["new"]


@pytest.mark.django_db(transaction=True)
def test_an_ack_before_the_task_runs_is_sent_before_it_runs(
    settings: Any, queue_name: str, start_worker: Any
) -> None:
    """``acks_late=False`` on RabbitMQ with batched acks: a child killed by the task (its ack
    would still be waiting for the batch) does not get the task run a second time."""
    require_service("RabbitMQ", 5672)
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": AMQP_URL,
        "DEFAULT_QUEUE": queue_name,
        "BROKER_TRANSPORT_OPTIONS": {"ack_batch_seconds": 30},  # no flusher to save it
    }
    try:
        worker = start_worker("-P", "prefork", "-c", "1")  # prefetch 4: a batch of 2 acks
        dies = early_ack_then_die.delay()
        after = slow_record.delay(0, "after")  # runs in the respawned child
        wait_for(
            lambda: Execution.objects.filter(task_id=after.id, label="end:after").exists(),
            60,
            what="the task after the one that killed its child",
        )
        time.sleep(1.0)  # a redelivery would be at once (the dead child's connection dropped)
        assert Execution.objects.filter(task_id=dies.id, label="early-die").count() == 1
        assert worker.process.poll() is None
    finally:
        delete_queues(AMQP_URL, [queue_name])
