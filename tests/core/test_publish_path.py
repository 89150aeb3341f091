"""The publish path's shortcuts: what they remember, and that they change nothing on the wire.

``build_message`` remembers each task's ``TASK_ROUTES`` entry and resolved destination until the
settings change; the ``redis://`` put script pushes a wake token only while fewer than the cap
wait; the envelope is the text ``json.dumps`` gives; task ids are uuid4 strings; the AMQP content
header (its headers table) is the bytes py-amqp writes.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from typing import Any

import amqp
import pytest
import redis
from amqp.exceptions import FrameSyntaxError

from django_tq.broker import Broker
from django_tq.broker.confirms import Message as AmqpMessage
from django_tq.message import WireMessage
from django_tq.tasks import new_task_id
from django_tq.transport.redis import dump_envelope
from tests.conftest import require_service
from tests.settings import REDIS_DB
from tests.testapp.tasks import add

REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB + 2}"


def test_task_ids_are_uuid4_strings() -> None:
    ids = {new_task_id() for _ in range(2000)}
    assert len(ids) == 2000
    for task_id in list(ids)[:200]:
        parsed = uuid.UUID(task_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == task_id


@pytest.mark.parametrize(
    "envelope",
    [
        {"body": '{"args":["é",1.5],"kwargs":{}}', "headers": {"id": "x", "eta": None}},
        {"body": "b", "headers": {"custom": {"k": [1, {"n": None}], "ü": "\u2028"}}},
        {"body": "", "properties": {"priority": 0, "f": math.inf, 3: True}},
    ],
)
def test_the_envelope_is_the_text_json_dumps_gives(envelope: dict[str, Any]) -> None:
    assert dump_envelope(envelope) == json.dumps(envelope)


def test_an_envelope_that_json_cannot_carry_raises_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dump_envelope({"headers": {"x": object()}})


def test_routes_and_destinations_follow_the_settings(settings: Any) -> None:
    base = {**settings.TQ, "TASK_ROUTES": {}, "QUEUES": None}
    settings.TQ = {**base, "DEFAULT_QUEUE": "first"}
    assert add.build_message((1, 2), None, {}).queue == "first"
    settings.TQ = {**base, "DEFAULT_QUEUE": "second"}
    assert add.build_message((1, 2), None, {}).queue == "second"
    settings.TQ = {
        **base,
        "TASK_ROUTES": {"tests.testapp.tasks.*": {"queue": "routed", "priority": 7}},
    }
    message = add.build_message((1, 2), None, {})
    assert (message.queue, message.priority) == ("routed", 7)
    assert add.build_message((1, 2), None, {"queue": "call"}).queue == "call"
    settings.TQ = {**base, "TASK_ROUTES": {"tests.testapp.tasks.*": "again"}}
    assert add.build_message((1, 2), None, {}).queue == "again"


def test_a_task_whose_queue_changes_is_routed_by_its_new_queue(
    settings: Any, monkeypatch: Any
) -> None:
    settings.TQ = {**settings.TQ, "TASK_ROUTES": {}, "QUEUES": None, "DEFAULT_QUEUE": "dflt"}
    assert add.build_message((1, 2), None, {}).queue == "dflt"
    monkeypatch.setattr(add, "queue", "mine")
    assert add.build_message((1, 2), None, {}).queue == "mine"
    monkeypatch.setattr(add, "queue", None)
    assert add.build_message((1, 2), None, {}).queue == "dflt"


def test_a_callable_router_is_asked_at_every_call(settings: Any) -> None:
    asked: list[Any] = []

    def router(name: str, args: Any, kwargs: Any) -> str:
        asked.append(args)
        return f"q{args[0]}"

    settings.TQ = {**settings.TQ, "TASK_ROUTES": [router], "QUEUES": None}
    assert add.build_message((1, 2), None, {}).queue == "q1"
    assert add.build_message((5, 2), None, {}).queue == "q5"
    assert asked == [(1, 2), (5, 2)]


@pytest.fixture
def redis_broker() -> Any:
    require_service("Redis", 6379)
    queue = f"tq-test-{uuid.uuid4().hex[:10]}"
    broker = Broker(REDIS_URL)
    yield broker, queue
    with broker.connection() as connection:
        connection.default_channel._delete(queue)


def test_a_publish_onto_a_full_wake_list_does_not_write_it(redis_broker: Any) -> None:
    """With a backlog nobody drains the wake list: a publish then writes the payload and the
    ready list only (a WATCH on the wake list sees no write), and the tokens stay at the cap."""
    broker, queue = redis_broker
    wire = WireMessage(headers={"id": "w"}, body="b", content_type="text/plain")
    wake = f"tq:{{{queue}}}:wake"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        broker.publish(wire, queue=queue)
        assert client.llen(wake) == 1
        for _ in range(20):
            broker.publish(wire, queue=queue)
        assert client.llen(wake) == 16  # the channel's wake_tokens
        with client.pipeline() as pipe:
            pipe.watch(wake)
            broker.publish(wire, queue=queue)
            pipe.multi()
            pipe.llen(wake)
            assert pipe.execute() == [16]  # no WatchError: the wake list was not written
        assert client.hlen(f"tq:{{{queue}}}:payloads") == 22
    finally:
        client.close()


HEADERS = [
    {},
    {
        "tq": 1,
        "id": "5b3c",
        "root_id": None,
        "ignore_result": False,
        "timelimit": [None, 2.5],
        "custom": {"é": [1, True, {"x": 2**40}], "neg": -2147483648, "b": b"by", "t": (1, "a")},
        "dt": dt.datetime(2020, 1, 1),
        "dec": decimal.Decimal("1.25"),
        "big": -(2**63),
    },
]
PROPERTIES = [
    {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2},
    {
        "priority": 5,
        "content_type": "",
        "content_encoding": "binary",
        "delivery_mode": 2,
        "not_before": "2026-12-07T00:00:00+00:00",
        "expiration": "100",
        "message_id": "m",
        "timestamp": 5,
        "type": "t",
        "user_id": "guest",
        "app_id": b"a",
        "cluster_id": "c",
        "reply_to": "r",
        "correlation_id": "ü",
    },
]


@pytest.mark.parametrize("headers", HEADERS)
@pytest.mark.parametrize("properties", PROPERTIES)
def test_the_amqp_content_header_is_the_bytes_py_amqp_writes(
    headers: dict[str, Any], properties: dict[str, Any]
) -> None:
    ours = AmqpMessage("body", application_headers=headers, **properties)
    theirs = amqp.Message("body", application_headers=headers, **properties)
    assert ours._serialize_properties() == theirs._serialize_properties()


@pytest.mark.parametrize("headers", [{"x": object()}, {"x": [object()]}, {"x": {"y": object()}}])
def test_an_illegal_amqp_header_fails_as_py_amqp_fails(headers: dict[str, Any]) -> None:
    with pytest.raises(FrameSyntaxError) as theirs:
        amqp.Message("b", application_headers=headers)._serialize_properties()
    with pytest.raises(FrameSyntaxError) as ours:
        AmqpMessage("b", application_headers=headers)._serialize_properties()
    assert str(ours.value).split("[")[0] == str(theirs.value).split("[")[0]
