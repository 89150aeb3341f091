"""The outbox (Redis, RabbitMQ): written in the caller's transaction, published once, never lost."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from django.db import connections, transaction
from django.utils import timezone

from django_tq import AsyncResult, outbox, states
from django_tq.broker import get_broker
from django_tq.models import OutboxMessage, QueueMessage
from tests.conftest import ROOT, worker_env
from tests.testapp.models import Execution
from tests.testapp.tasks import record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]

external_brokers = pytest.mark.parametrize("broker_url", ["redis", "amqp"], indirect=True)


@pytest.fixture
def with_outbox(broker_url, settings):
    settings.TQ = {**settings.TQ, "OUTBOX": True}
    return settings.TQ["DEFAULT_QUEUE"]


def enqueue_and_crash_after_commit(count: int) -> list[str]:
    """Enqueue ``count`` tasks in a transaction in another process, which dies at the commit.

    Its first ``on_commit`` callback ends the process, so the publishes that follow never run:
    the data committed, the messages were never handed to the broker.
    """
    code = (
        "import os\n"
        "from django.db import transaction\n"
        "from tests.testapp.tasks import record\n"
        "with transaction.atomic():\n"
        "    transaction.on_commit(lambda: os._exit(0))\n"
        f"    for index in range({count}):\n"
        "        print(record.delay(f'crash-{index}').id, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "django", "shell", "-v", "0", "-c", code],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@external_brokers
def test_rollback_writes_nothing_and_commit_publishes_once(with_outbox):
    queue = with_outbox
    with pytest.raises(RuntimeError), transaction.atomic():
        record.delay("rolled-back")
        assert OutboxMessage.objects.count() == 1  # written in the caller's transaction
        raise RuntimeError("rollback")
    assert not OutboxMessage.objects.exists()
    with transaction.atomic():
        record.delay("committed")
        assert OutboxMessage.objects.count() == 1
    assert not OutboxMessage.objects.exists()  # published right after the commit, then deleted
    assert get_broker().depth(queue) == 1
    assert outbox.relay(get_broker(), timezone.now() + 2 * outbox.RELAY_AFTER) == 0
    assert get_broker().depth(queue) == 1


@external_brokers
def test_a_crash_between_commit_and_publish_is_relayed_by_a_worker(with_outbox, start_worker):
    (task_id,) = enqueue_and_crash_after_commit(1)
    assert OutboxMessage.objects.get().task_id == task_id
    assert get_broker().depth(with_outbox) == 0  # lost without the outbox
    start_worker("-P", "solo")
    assert AsyncResult(task_id).get(timeout=30) == "crash-0"
    assert Execution.objects.filter(label="crash-0").count() == 1
    assert not OutboxMessage.objects.exists()


@external_brokers
def test_two_relays_publish_each_row_once(with_outbox):
    task_ids = enqueue_and_crash_after_commit(30)
    assert OutboxMessage.objects.count() == 30
    later = timezone.now() + 2 * outbox.RELAY_AFTER
    barrier = threading.Barrier(2)
    counts: list[int] = []

    def relay() -> None:
        try:
            barrier.wait(10)
            while relayed := outbox.relay(get_broker(), later, limit=4):
                counts.append(relayed)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=relay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(counts) == 30
    assert get_broker().depth(with_outbox) == 30
    assert not OutboxMessage.objects.exists()
    assert all(AsyncResult(task_id).state == states.QUEUED for task_id in task_ids)


def test_the_database_transport_needs_no_outbox(settings):
    settings.TQ = {**settings.TQ, "OUTBOX": True}
    with transaction.atomic():
        record.delay("db")
    assert not OutboxMessage.objects.exists()
    assert QueueMessage.objects.count() == 1
