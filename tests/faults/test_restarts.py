"""Broker restarts with workers running: they reconnect, nothing whose ``.delay()`` returned is lost.

Each test restarts a server of its own (``redis-server`` on a free port, a private RabbitMQ
node), never the shared services. Messages survive a restart because the broker persists them:
Redis with an append-only file fsynced on every write, RabbitMQ with durable queues and persistent
messages (what django_tq declares and publishes). A broker that loses its data loses the queued
messages: that is the deployment's durability choice.
"""

from __future__ import annotations

import time

import pytest

from django_tq import AsyncResult, states
from django_tq.broker import get_broker
from django_tq.exceptions import PublishError
from django_tq.models import OutboxMessage
from tests.conftest import wait_for
from tests.faults.conftest import (
    LEASE_SECONDS,
    Service,
    burst,
    finished_count,
    running_now,
    wait_until_finished,
)
from tests.testapp.models import Execution
from tests.testapp.tasks import slow_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CONNECTION_TIMEOUT = 1.0


def _restart_mid_burst(server: Service, url: str, queue: str, settings, start_worker) -> None:
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": url,
        "DEFAULT_QUEUE": queue,
        "LEASE_SECONDS": LEASE_SECONDS,
        "BROKER_CONNECTION_TIMEOUT": CONNECTION_TIMEOUT,
    }
    worker = start_worker("-P", "prefork", "-c", "2")
    before = burst(300, seconds=0.05)  # about 7 s of work: the stop lands mid-burst
    wait_for(lambda: finished_count() >= 30, 60, what="30 tasks done")
    server.stop()
    running = running_now(before)
    assert finished_count() < len(before)  # mid-burst
    refused_at = time.monotonic()
    with pytest.raises(PublishError):
        slow_record.apply_async((0, "refused"), task_id="refused")
    assert time.monotonic() - refused_at <= CONNECTION_TIMEOUT + 2  # loudly and in bounded time
    server.start()
    after = burst(100)  # the client reconnects by itself too
    runs = wait_until_finished(before + after, 120)
    assert runs.lost(before + after) == set()
    assert runs.duplicated() <= running
    assert worker.process.poll() is None, worker.output()  # the same worker reconnected
    assert not Execution.objects.filter(label="start:refused").exists()
    assert AsyncResult("refused").state == states.FAILURE  # the caller's record says so too


def test_a_redis_restart_loses_nothing(private_redis, queue_name, settings, start_worker):
    _restart_mid_burst(private_redis, private_redis.url, queue_name, settings, start_worker)


def test_a_rabbitmq_restart_loses_nothing(private_rabbitmq, queue_name, settings, start_worker):
    _restart_mid_burst(private_rabbitmq, private_rabbitmq.url, queue_name, settings, start_worker)


def test_a_rabbitmq_killed_with_batch_confirms_in_flight_loses_nothing(
    private_rabbitmq, queue_name, settings, start_worker
):
    """``BROKER_CONFIRM="batch"``: the broker is SIGKILLed right after a burst of ``.delay()``,
    before it confirmed the last of them; those are kept in the outbox and relayed by the worker."""
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": private_rabbitmq.url,
        "DEFAULT_QUEUE": queue_name,
        "LEASE_SECONDS": LEASE_SECONDS,
        "BROKER_CONNECTION_TIMEOUT": CONNECTION_TIMEOUT,
        "BROKER_CONFIRM": "batch",
    }
    worker = start_worker("-P", "prefork", "-c", "2")
    broker = get_broker()
    first = burst(1)
    assert broker.wait_for_confirms()
    with broker._local.confirms.lock:  # nothing reads the confirms of these before the kill
        before = burst(500)
        private_rabbitmq.kill()
    assert broker.wait_for_confirms()  # each one confirmed (read before the socket closed) or kept
    kept = set(OutboxMessage.objects.values_list("task_id", flat=True))
    assert kept <= set(before)
    private_rabbitmq.start()
    after = burst(50)  # the client reconnects by itself
    runs = wait_until_finished(first + before + after, 180)
    assert runs.lost(first + before + after) == set()
    assert worker.process.poll() is None, worker.output()
    wait_for(lambda: not OutboxMessage.objects.exists(), 30, what="the outbox relayed")
