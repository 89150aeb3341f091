"""A periodic task's exchange and routing key: kept on the row, checked when it is saved, and sent
through by beat as ``apply_async(exchange=, routing_key=)`` is — to a topic-bound queue and not the
default one, on every transport (RabbitMQ routes itself, ``django://`` and ``redis://`` emulate it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ImproperlyConfigured, ValidationError
from django.utils import timezone

from django_tq import AsyncResult
from django_tq.beat.scheduler import Scheduler
from django_tq.beat.sync import sync_declared
from django_tq.broker import get_broker
from django_tq.models import PeriodicTask, TaskResult
from django_tq.schedules import Every
from django_tq.testing import CapturedQueue
from tests.beat.conftest import make_task, schedule_fields, utc
from tests.conftest import wait_for
from tests.core.test_exchange_routing import _cleanup

pytestmark = pytest.mark.django_db

T0 = utc("2024-05-01 12:00")
MINUTE = dt.timedelta(minutes=1)
WHO_AM_I = "tests.testapp.tasks.who_am_i"


def _feeds(settings: Any, default: str = "default", **extra: Any) -> None:
    """Declare ``default`` and ``feed_tasks``, bound to topic exchange ``feeds`` with ``feed.#``."""
    settings.TQ = {
        **settings.TQ,
        "QUEUES": {
            default: {},
            "feed_tasks": {"exchange": "feeds", "exchange_type": "topic", "routing_key": "feed.#"},
        },
        **extra,
    }


def test_beat_sends_through_the_exchange_with_the_routing_key(
    settings: Any, queue: CapturedQueue
) -> None:
    _feeds(settings)
    make_task(MINUTE, name="feeds", created=T0, exchange="feeds", routing_key="feed.import")
    # on the default exchange (direct), a key no queue is bound with names its queue
    make_task(MINUTE, name="key only", created=T0, routing_key="feed.export")
    make_task(MINUTE, name="plain", created=T0)
    beat = Scheduler(name="beat-a", max_interval=5, grace=dt.timedelta(seconds=10))
    sent = beat.tick(T0 + MINUTE)
    assert sorted(s.periodic_task for s in sent) == ["feeds", "key only", "plain"]
    assert sorted((m.queue, m.exchange, m.routing_key) for m in queue.messages) == [
        ("default", None, None),
        ("feed.export", None, None),
        ("feed_tasks", "feeds", "feed.import"),
    ]


def test_a_route_the_settings_no_longer_allow_is_logged_and_sent_once_fixed(
    settings: Any, queue: CapturedQueue, caplog: pytest.LogCaptureFixture
) -> None:
    _feeds(settings)
    job = make_task(MINUTE, name="feeds", created=T0, exchange="feeds", routing_key="feed.x")
    make_task(MINUTE, name="plain", created=T0)
    settings.TQ = {**settings.TQ, "QUEUES": {"default": {}}}  # the exchange was removed
    beat = Scheduler(name="beat-a", max_interval=5, grace=dt.timedelta(seconds=10))
    assert [s.periodic_task for s in beat.tick(T0 + MINUTE)] == ["plain"]
    assert "Periodic task 'feeds' is not sent: Exchange 'feeds' is not declared" in caplog.text
    assert not job.runs.exists()  # nothing claimed: no run re-sent (and failing) at every tick
    _feeds(settings)
    (sent,) = beat.tick(T0 + MINUTE + dt.timedelta(seconds=5))  # within the grace: still sent
    assert sent.periodic_task == "feeds" and queue.messages[-1].queue == "feed_tasks"


def test_the_routing_is_checked_when_the_task_is_saved(settings: Any) -> None:
    _feeds(settings)
    fields = {"name": "job", "task": WHO_AM_I, **schedule_fields(Every(MINUTE))}
    PeriodicTask(**fields, exchange="feeds", routing_key="feed.import").full_clean()
    PeriodicTask(**fields, routing_key="default").full_clean()  # the default exchange, direct
    PeriodicTask(**fields, queue="made-up").full_clean()  # created when used
    problems = {
        "undeclared exchange": (
            {"exchange": "media", "routing_key": "image.resize"},
            "Exchange 'media' is not declared: no queue of TQ['QUEUES'] is bound to it, so "
            "routing key 'image.resize' reaches no queue.",
        ),
        "unbound key": (
            {"exchange": "feeds", "routing_key": "orders.new"},
            "Routing key 'orders.new' on exchange 'feeds' (topic) reaches no queue declared in "
            "TQ['QUEUES'].",
        ),
    }
    for what, (routing, message) in problems.items():
        with pytest.raises(ValidationError) as error:
            PeriodicTask(**fields, **routing).full_clean()
        assert error.value.message_dict == {NON_FIELD_ERRORS: [message]}, what
    with pytest.raises(ValidationError) as error:
        PeriodicTask(**fields, exchange="a b", routing_key="feed.import").full_clean()
    assert error.value.message_dict == {
        "exchange": ["Use letters, digits and . _ : @ - only (no spaces)."]
    }
    _feeds(settings, CREATE_MISSING_QUEUES=False)
    with pytest.raises(ValidationError, match="'made-up' is not declared"):
        PeriodicTask(**fields, queue="made-up").full_clean()


def test_a_declared_task_takes_its_exchange_and_routing_key_from_the_code(settings: Any) -> None:
    _feeds(settings)
    options = {"exchange": "feeds", "routing_key": "feed.import"}
    settings.TQ = {
        **settings.TQ,
        "BEAT_SCHEDULE": {"feeds": {"task": WHO_AM_I, "schedule": 60, "options": options}},
    }
    sync_declared()
    task = PeriodicTask.objects.get(name="feeds")
    assert (task.exchange, task.routing_key, task.code_managed) == ("feeds", "feed.import", True)
    options["routing_key"] = "orders.new"
    with pytest.raises(ImproperlyConfigured, match=r"'orders\.new' on exchange 'feeds'"):
        sync_declared()


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_a_tick_reaches_the_topic_bound_queue_and_not_the_default_one(
    broker_url: str, queue_name: str, settings: Any, start_worker: Any
) -> None:
    feed, exchange = f"{queue_name}-feed", f"{queue_name}-x"
    settings.TQ = {
        **settings.TQ,
        "QUEUES": {
            queue_name: {},
            feed: {"exchange": exchange, "exchange_type": "topic", "routing_key": "feed.#"},
        },
    }
    now = timezone.now()
    make_task(
        MINUTE,
        name="feeds",
        created=now - MINUTE - dt.timedelta(seconds=1),
        task=WHO_AM_I,
        exchange=exchange,
        routing_key="feed.import",
    )
    try:
        # sent before any worker declared the queues: the publisher declares the binding itself
        (sent,) = Scheduler(name="beat-a", max_interval=5).tick(now)
        assert TaskResult.objects.get(task_id=sent.task_id).queue == feed
        assert get_broker().depth(queue_name) == 0  # the default queue got no copy
        start_worker("-P", "solo", "-Q", feed)
        assert AsyncResult(sent.task_id).get(timeout=20)["queue"] == feed
        # the result is recorded before the ack: wait for the message to leave the queue
        wait_for(lambda: get_broker().depth(feed) == 0, what=f"the ack in {feed}")
        assert get_broker().depth(queue_name) == 0
    finally:
        _cleanup(broker_url, [feed], [exchange])
