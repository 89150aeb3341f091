"""Fencing: a worker cut off past its lease cannot overwrite the run that took its task over.

End to end across hosts: ``tests/faults/test_network.py`` (a partitioned worker). Here, the two
fences on their own: the result write (``store(fenced=True)``), and what ``record()`` does when it
is refused — nothing that would follow the stale outcome happens.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from django_tq import states
from django_tq.broker import Broker
from django_tq.broker.delivery import Delivery
from django_tq.exceptions import Superseded
from django_tq.execution import execute, record
from django_tq.message import TaskMessage, encode
from django_tq.models import QueueMessage, TaskResult
from django_tq.result_backends import get_backend
from tests.testapp.tasks import add, tsum

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


def _message(task_id: str, **fields) -> TaskMessage:
    return TaskMessage(
        **{"id": task_id, "task": add.name, "args": (2, 3), "queue": "default", **fields}
    )


def test_a_fenced_write_is_refused_once_a_newer_delivery_started_the_task():
    backend = get_backend()
    message = _message("fenced-1")
    assert backend.mark_started(message, worker="stale@a", delivery_count=1)
    assert backend.mark_started(message, worker="current@b", delivery_count=2)  # took it over
    with pytest.raises(Superseded, match="newer delivery while delivery 1 ran"):
        backend.store(
            message, states.SUCCESS, result=5, worker="stale@a", delivery_count=1, fenced=True
        )
    backend.store(
        message, states.SUCCESS, result=5, worker="current@b", delivery_count=2, fenced=True
    )
    row = TaskResult.objects.get(task_id="fenced-1")
    assert (row.state, row.worker, row.delivery_count) == (states.SUCCESS, "current@b", 2)
    # and once the newer delivery finished, the stale one still cannot overwrite it
    with pytest.raises(Superseded):
        backend.store(message, states.FAILURE, worker="stale@a", delivery_count=1, fenced=True)
    assert TaskResult.objects.get(task_id="fenced-1").state == states.SUCCESS


def test_an_unfenced_write_and_a_first_write_are_recorded_as_before():
    backend = get_backend()
    message = _message("fenced-2")
    backend.store(message, states.SUCCESS, result=5, worker="w@a", delivery_count=1, fenced=True)
    assert TaskResult.objects.get(task_id="fenced-2").state == states.SUCCESS  # no row: created
    backend.store(message, states.FAILURE, worker="w@a", delivery_count=1)  # unfenced: as ever
    assert TaskResult.objects.get(task_id="fenced-2").state == states.FAILURE


def test_a_superseded_outcome_is_dropped_with_everything_that_would_follow_it():
    backend = get_backend()
    # a chain step: its success would send the next step
    nxt = tsum.s().to_dict()
    message = _message("fenced-3", chain=(nxt,))
    assert backend.mark_started(message, worker="stale@a", delivery_count=1)
    assert backend.mark_started(message, worker="current@b", delivery_count=2)
    outcome = execute(message, hostname="stale@a", delivery_count=1)
    assert outcome.state == states.SUCCESS
    assert record(message, outcome, worker="stale@a", delivery_count=1, fenced=True) is False
    assert TaskResult.objects.get(task_id="fenced-3").state == states.STARTED  # still b's run
    assert not QueueMessage.objects.exists()  # no next step sent by the stale run
    assert record(message, outcome, worker="current@b", delivery_count=2, fenced=True) is True
    assert QueueMessage.objects.count() == 1  # the current run sends it, once


def _delivered(subscription_owner: list, broker: Broker, queue: str) -> Delivery:
    received: list[Delivery] = []
    subscription = broker.subscribe([queue], prefetch=1, on_delivery=received.append)
    subscription_owner.append(subscription)
    for _ in range(5):
        subscription.drain(0.05)
        if received:
            break
    (delivery,) = received
    return delivery


def test_a_folded_ack_of_a_superseded_run_deletes_nothing_and_overwrites_nothing(queue_name):
    # django:// on PostgreSQL: the final state's statement also acks. The run cut off past its
    # lease comes back: its statement must neither overwrite the newer run's state nor delete
    # the message the newer run holds.
    if connection.vendor != "postgresql":
        pytest.skip("the ack goes with the final state on PostgreSQL only")
    broker = Broker("django://", transport_options={"lease_seconds": 1.5, "polling_interval": 0.01})
    message = _message("fenced-4", queue=queue_name)
    broker.publish(encode(message), queue=queue_name)
    subscriptions: list = []
    try:
        stale = _delivered(subscriptions, broker, queue_name)
        backend = get_backend()
        assert backend.mark_started(message, worker="stale@a", delivery_count=1)
        time.sleep(1.7)  # the stale holder is cut off: no renewal
        current = _delivered(subscriptions, broker, queue_name)
        assert current.delivery_count == 2
        assert backend.mark_started(message, worker="current@b", delivery_count=2)
        outcome = execute(message, hostname="stale@a", delivery_count=1)
        late = stale.folded_ack()
        assert late is not None
        assert (
            record(message, outcome, worker="stale@a", delivery_count=1, fenced=True, ack=late)
            is False
        )
        assert not stale.acked
        assert TaskResult.objects.get(task_id="fenced-4").worker == "current@b"
        assert QueueMessage.objects.filter(lease_owner__isnull=False).count() == 1
        stale.ack()  # the consumer's own ack of it, fenced by the lease: deletes nothing
        assert QueueMessage.objects.count() == 1
        assert record(
            message,
            outcome,
            worker="current@b",
            delivery_count=2,
            fenced=True,
            ack=current.folded_ack(),
        )
        assert current.acked  # acked by the final state's statement
        row = TaskResult.objects.get(task_id="fenced-4")
        assert (row.state, row.worker) == (states.SUCCESS, "current@b")
        assert not QueueMessage.objects.exists()
    finally:
        for subscription in subscriptions:
            subscription.close()


def test_a_folded_ack_waits_for_a_row_to_write(queue_name):
    # No row to update (results written nowhere before, e.g. TRACK_STARTED off and the QUEUED
    # row gone): the row is created, and the message is acked after it, not with it.
    if connection.vendor != "postgresql":
        pytest.skip("the ack goes with the final state on PostgreSQL only")
    broker = Broker("django://", transport_options={"polling_interval": 0.01})
    message = _message("fenced-5", queue=queue_name)
    broker.publish(encode(message), queue=queue_name)
    subscriptions: list = []
    try:
        delivery = _delivered(subscriptions, broker, queue_name)
        outcome = execute(message, hostname="w@a", delivery_count=1)
        assert record(message, outcome, worker="w@a", delivery_count=1, ack=delivery.folded_ack())
        assert not delivery.acked and QueueMessage.objects.count() == 1
        assert TaskResult.objects.get(task_id="fenced-5").state == states.SUCCESS
        delivery.ack()
        subscriptions[0].channel.flush_acks()  # acks are batched
        assert not QueueMessage.objects.exists()
    finally:
        for subscription in subscriptions:
            subscription.close()
