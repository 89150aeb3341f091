"""Producers that are not django_tq: plain kombu, by URL, with the documented wire format.

The producer side never calls django_tq's API: it opens ``kombu.Connection(url)`` and builds the
headers and body by hand, as another service would from docs/transports.md. What it sends runs
in a real worker when it is a well-formed django_tq message, and is dead-lettered with a reason
when it is not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import kombu.transport.redis
import pytest
from kombu import Connection, Exchange, Producer, Queue
from kombu.transport import TRANSPORT_ALIASES, resolve_transport

from django_tq import AsyncResult, states
from django_tq.models import DeadLetter, TaskResult
from django_tq.transport import KOMBU_ALIASES, register_with_kombu
from django_tq.transport.database import Transport as DatabaseTransport
from django_tq.transport.redis import SecureTransport as SecureRedisTransport
from django_tq.transport.redis import Transport as RedisTransport
from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def foreign_url(broker_url: str) -> str:
    """Return the URL a foreign kombu producer uses to reach the broker at ``broker_url``."""
    if broker_url.startswith("redis://"):
        return "tq" + broker_url  # kombu's own redis:// is kombu's transport, not ours
    return broker_url


def publish(url: str, queue: str, body: Any, **options: Any) -> None:
    """Publish one message with a plain kombu producer (what docs/transports.md shows)."""
    with Connection(url) as connection:
        producer = Producer(connection)
        producer.publish(
            body,
            exchange="",
            routing_key=queue,
            declare=[
                Queue(
                    queue,
                    Exchange(queue, type="direct"),
                    routing_key=queue,
                    queue_arguments={"x-max-priority": 10},
                    durable=True,
                )
            ],
            delivery_mode=2,
            retry=True,
            **options,
        )


def task_message(task_id: str, task: str, body: str) -> dict[str, Any]:
    """Return the ``publish`` options of a django_tq message built by hand."""
    return {
        "body": body,
        "headers": {"tq": 1, "id": task_id, "task": task},
        "content_type": "application/json",
        "content_encoding": "utf-8",
    }


def test_kombu_resolves_our_schemes_and_keeps_its_own_redis() -> None:
    assert register_with_kombu() == ["django", "tqredis", "tqrediss"]  # idempotent: ready() ran
    assert resolve_transport("django") is DatabaseTransport
    assert resolve_transport("tqredis") is RedisTransport
    assert resolve_transport("tqrediss") is SecureRedisTransport
    assert resolve_transport("redis") is kombu.transport.redis.Transport  # not hijacked
    assert Connection("django://?alias=default").transport.alias == "default"


def test_a_name_taken_by_another_library_is_left_alone(monkeypatch: Any, caplog: Any) -> None:
    monkeypatch.setitem(TRANSPORT_ALIASES, "tqredis", "elsewhere.transport:Transport")
    assert register_with_kombu() == ["django", "tqrediss"]
    assert TRANSPORT_ALIASES["tqredis"] == "elsewhere.transport:Transport"
    assert "'tqredis' is taken" in caplog.text
    assert set(KOMBU_ALIASES) == {"django", "tqredis", "tqrediss"}


def test_a_plain_kombu_producer_reaches_a_worker_and_bad_input_is_dead_lettered(
    broker_url: str, settings: Any, start_worker: Any
) -> None:
    queue = settings.TQ["DEFAULT_QUEUE"]
    url = foreign_url(broker_url)
    worker = start_worker("-P", "solo")
    add = "tests.testapp.tasks.add"
    publish(url, queue, **task_message("not-json", add, "{not json"))
    celery_shaped = json.dumps([[1, 2], {}, {"callbacks": None}])  # Celery protocol 2's body
    publish(url, queue, **task_message("wrong-shape", add, celery_shaped))
    args_not_a_list = json.dumps({"args": "1, 2", "kwargs": {}})
    publish(url, queue, **task_message("args-not-a-list", add, args_not_a_list))
    unknown = json.dumps({"args": [], "kwargs": {}})
    publish(url, queue, **task_message("unknown", "billing.tasks.no_such_task", unknown))
    publish(url, queue, {"order": 7}, serializer="json")  # kombu's own format, no tq headers
    good = str(uuid.uuid4())
    body = json.dumps({"args": [20], "kwargs": {"y": 22}})
    publish(url, queue, priority=9, **task_message(good, add, body))

    assert AsyncResult(good).get(timeout=30) == 42  # the worker kept consuming past bad input
    row = TaskResult.objects.get(task_id=good)
    assert (row.task_name, row.state, row.queue) == (add, states.SUCCESS, queue)
    wait_for(lambda: DeadLetter.objects.count() == 5, what="5 dead letters")
    reasons = {letter.task_id: letter.reason for letter in DeadLetter.objects.all()}
    assert "malformed JSON" in reasons["not-json"]
    assert "body must be an object with 'args' and 'kwargs'" in reasons["wrong-shape"]
    assert "body 'args' must be a list" in reasons["args-not-a-list"]
    assert "unknown task" in reasons["unknown"]
    assert "not a django_tq message" in reasons[None]
    assert DeadLetter.objects.get(task_id="not-json").payload == "{not json"  # kept as sent
    assert json.loads(DeadLetter.objects.get(task_id=None).payload) == {"order": 7}
    assert set(DeadLetter.objects.values_list("queue", flat=True)) == {queue}
    for task_id in ("not-json", "wrong-shape", "args-not-a-list", "unknown"):
        assert AsyncResult(task_id).state == states.DEAD
    assert worker.process.poll() is None


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_a_producer_that_is_not_a_django_project_publishes_by_url(
    broker_url: str, settings: Any, start_worker: Any
) -> None:
    """A script with django_tq installed but no Django settings: tqredis:// after one call."""
    queue = settings.TQ["DEFAULT_QUEUE"]
    start_worker("-P", "solo")
    task_id = str(uuid.uuid4())
    script = """
import json, sys
from kombu import Connection, Producer
from django_tq.transport import register_with_kombu

register_with_kombu()
url, queue, task_id = sys.argv[1:]
with Connection(url) as connection:
    Producer(connection).publish(
        json.dumps({"args": [1, 2], "kwargs": {}}),
        exchange="",
        routing_key=queue,
        headers={"tq": 1, "id": task_id, "task": "tests.testapp.tasks.add"},
        content_type="application/json",
        content_encoding="utf-8",
    )
from django.conf import settings
print("configured" if settings.configured else "no settings")
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, foreign_url(broker_url), queue, task_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no settings"
    assert AsyncResult(task_id).get(timeout=30) == 3
