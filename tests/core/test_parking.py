"""Far-away ETAs wait in ParkedMessage, not in a worker; released when due, run once."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from django.utils import timezone

from django_tq import AsyncResult, states
from django_tq.broker import get_broker
from django_tq.models import ParkedMessage, QueueMessage, TaskResult
from django_tq.parking import release_due
from tests.conftest import wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import add, record

pytestmark = pytest.mark.db


@pytest.mark.django_db(transaction=True)
def test_far_eta_is_parked_in_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        record.apply_async(("rolled back",), countdown=3600)
        raise RuntimeError
    assert not ParkedMessage.objects.exists()
    result = record.apply_async(("later",), countdown=3600)
    near = record.apply_async(("soon",), countdown=5)
    parked = ParkedMessage.objects.get()
    assert parked.task_id == result.id and parked.queue == "default"
    assert [m.not_before > timezone.now() for m in QueueMessage.objects.all()] == [
        True
    ]  # only `soon`
    assert AsyncResult(result.id).state == states.QUEUED
    assert TaskResult.objects.get(task_id=near.id).eta is not None


@pytest.mark.django_db(transaction=True)
def test_release_publishes_due_messages_once():
    due = record.apply_async(("due",), countdown=120)
    record.apply_async(("not yet",), countdown=7200)
    broker = get_broker()
    assert release_due(broker, timezone.now()) == 0
    assert release_due(broker, timezone.now() + dt.timedelta(seconds=120)) == 1
    assert release_due(broker, timezone.now() + dt.timedelta(seconds=120)) == 0
    (message,) = QueueMessage.objects.all()
    assert '"released": true' in message.payload and due.id in message.payload
    assert ParkedMessage.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_eta_three_times_the_lease_runs_once_and_on_time(broker_url, settings, start_worker):
    settings.TQ = {**settings.TQ, "LEASE_SECONDS": 1, "ETA_HORIZON_SECONDS": 1}
    start_worker("-P", "prefork", "-c", "1")
    eta = timezone.now() + dt.timedelta(seconds=3)
    result = record.apply_async(("eta",), eta=eta)
    assert ParkedMessage.objects.filter(task_id=result.id).exists()
    assert result.get(timeout=20) == "eta"
    ran = Execution.objects.get(label="eta")
    assert eta - dt.timedelta(milliseconds=50) <= ran.created_at <= eta + dt.timedelta(seconds=2)
    assert add.delay(1, 1).get(timeout=20) == 2  # later traffic flows; the ETA task ran once
    assert Execution.objects.filter(label="eta").count() == 1
    assert not ParkedMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_second_released_copy_of_a_finished_task_is_skipped(settings, start_worker):
    settings.TQ = {**settings.TQ, "ETA_HORIZON_SECONDS": 0}
    result = record.apply_async(("twice",), countdown=0.5)
    (row,) = ParkedMessage.objects.values()
    # A crash between publishing and deleting the row releases the message twice.
    later = timezone.now() + dt.timedelta(seconds=1)
    assert release_due(get_broker(), later) == 1
    ParkedMessage.objects.create(**row)
    assert release_due(get_broker(), later) == 1
    assert QueueMessage.objects.count() == 2
    start_worker("-P", "solo")
    assert result.get(timeout=20) == "twice"
    wait_for(lambda: not QueueMessage.objects.exists(), what="the second copy consumed")
    assert Execution.objects.filter(label="twice").count() == 1
