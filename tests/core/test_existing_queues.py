"""RabbitMQ queues that exist with other arguments than django_tq's (``broker/existing_queues.py``).

Celery declares its queues with no arguments; django_tq with ``x-max-priority`` 10 (or as quorum
queues). RabbitMQ refuses a declaration whose arguments differ (``PRECONDITION_FAILED``) and
cannot change an existing queue's, so a queue Celery made first is used as it is: the worker
consumes it, producers publish into it, ``tqpurge`` empties it, each with one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from django_tq.broker import Broker, get_broker
from django_tq.models import TaskResult
from tests.conftest import AMQP_URL, delete_queues, require_service
from tests.testapp.tasks import add, who_am_i

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def celery_queue(settings: Any, queue_name: str) -> Iterator[str]:
    """The test's queue on RabbitMQ, declared first the way Celery does: durable, no arguments."""
    require_service("RabbitMQ", 5672)
    settings.TQ = {**settings.TQ, "BROKER_URL": AMQP_URL, "DEFAULT_QUEUE": queue_name}
    with Broker(AMQP_URL).connection() as conn:
        channel = conn.channel()
        channel.exchange_declare(queue_name, "direct", durable=True, auto_delete=False)
        channel.queue_declare(queue_name, durable=True, auto_delete=False)
        channel.queue_bind(queue_name, queue_name, queue_name)
    yield queue_name
    delete_queues(AMQP_URL, [queue_name])


def _arguments_refused(name: str, arguments: dict[str, Any]) -> str:
    """Return RabbitMQ's answer to declaring ``name`` with ``arguments`` ("" when accepted)."""
    with Broker(AMQP_URL).connection() as conn:
        try:
            conn.channel().queue_declare(name, durable=True, auto_delete=False, arguments=arguments)
        except conn.channel_errors as exc:
            return str(exc)
    return ""


def test_rabbitmq_refuses_other_arguments_for_an_existing_queue(celery_queue: str) -> None:
    """What the module works around, checked on the running RabbitMQ."""
    assert "inequivalent arg 'x-max-priority'" in _arguments_refused(
        celery_queue, {"x-max-priority": 10}
    )
    assert "inequivalent arg 'x-queue-type'" in _arguments_refused(
        celery_queue, {"x-queue-type": "quorum"}
    )
    assert _arguments_refused(celery_queue, {"x-queue-type": "classic"}) == ""  # the default


def test_a_queue_celery_declared_is_published_to_consumed_and_purged(
    celery_queue: str, start_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="django_tq.broker"):
        first = add.delay(2, 3)  # the publisher's declaration is refused, the queue used as is
        second = add.delay(4, 5)
    warnings = [r.getMessage() for r in caplog.records if "other arguments" in r.getMessage()]
    assert len(warnings) <= 1  # once per queue and process (none if an earlier test warned)
    assert get_broker().depth(celery_queue) == 2
    worker = start_worker("-P", "solo")
    assert first.get(timeout=20) == 5 and second.get(timeout=20) == 9
    assert f"Queue {celery_queue!r} exists on RabbitMQ with other arguments" in worker.output()
    assert "inequivalent arg 'x-max-priority'" in worker.output()
    assert who_am_i.delay().get(timeout=20)["queue"] == celery_queue  # after a reconnect too
    worker.stop()
    add.delay(1, 1)
    assert get_broker().purge([celery_queue]) == 1
    assert TaskResult.objects.filter(state="SUCCESS").count() == 3


def test_a_quorum_queue_wanted_for_a_classic_one_is_used_as_it_is(
    celery_queue: str, settings: Any, start_worker: Any
) -> None:
    settings.TQ = {
        **settings.TQ,
        "BROKER_TRANSPORT_OPTIONS": {"quorum_queues": [celery_queue]},
    }
    start_worker("-P", "solo")
    assert add.delay(2, 3).get(timeout=20) == 5


def test_a_quorum_queue_celery_declared_is_consumed_as_one(
    settings: Any, queue_name: str, start_worker: Any
) -> None:
    """Celery's ``task_default_queue_type = "quorum"``: RabbitMQ refuses a channel-wide prefetch
    on it, so the worker learns from the refusal that it is one."""
    require_service("RabbitMQ", 5672)
    settings.TQ = {**settings.TQ, "BROKER_URL": AMQP_URL, "DEFAULT_QUEUE": queue_name}
    with Broker(AMQP_URL).connection() as conn:
        conn.channel().queue_declare(
            queue_name, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
        )
    try:
        assert add.delay(2, 3).id  # the publisher uses it as it is
        worker = start_worker("-P", "solo")
        assert add.delay(4, 5).get(timeout=20) == 9
        assert TaskResult.objects.filter(state="SUCCESS").count() == 2
        assert "current is the value 'quorum'" in worker.output()
    finally:
        delete_queues(AMQP_URL, [queue_name])
