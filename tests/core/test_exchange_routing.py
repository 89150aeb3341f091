"""Exchanges, topic/fanout routing, Broadcast queues and CREATE_MISSING_QUEUES (``TQ["QUEUES"]``).

The worker tests run on every transport: RabbitMQ routes through real exchanges and bindings,
``django://`` and ``redis://`` emulate them at publish (``broker/exchange_emulation.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_tq import Broadcast, Queue
from django_tq.broker import Broker, get_broker
from django_tq.conf import tq_settings
from django_tq.exceptions import QueueNotFound
from django_tq.exchanges import copy_name, topic_matches
from django_tq.models import TaskResult, WorkerState
from django_tq.testing import capture
from tests.conftest import delete_queues, wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import add, record, who_am_i

pytestmark = pytest.mark.django_db


def _queues(settings: Any, queues: Any, **extra: Any) -> None:
    settings.TQ = {**settings.TQ, "QUEUES": queues, **extra}


# -- topic matching and the setting -------------------------------------------------------------
@pytest.mark.parametrize(
    ("binding", "key", "matches"),
    [
        ("feed.#", "feed.import", True),
        ("feed.#", "feed", True),
        ("feed.#", "feed.import.rss", True),
        ("feed.*", "feed.import", True),
        ("feed.*", "feed", False),
        ("feed.*", "feed.import.rss", False),
        ("*.import", "feed.import", True),
        ("#.import", "a.b.import", True),
        ("#", "anything.at.all", True),
        ("feed.import", "feed.export", False),
        ("feed.#.rss", "feed.rss", True),
        ("feed.#.rss", "feed.a.b.rss", True),
        ("feed.#.rss", "feed.a.b.atom", False),
    ],
)
def test_topic_matching_follows_amqp(binding: str, key: str, matches: bool) -> None:
    assert topic_matches(binding, key) is matches


@pytest.mark.parametrize(
    ("queues", "extra", "message"),
    [
        ({"a": {"exchange_type": "headers"}}, {}, "exchange_type must be one of"),
        ({"a": {"routing_key": "a.#"}}, {}, "only a topic exchange"),
        ({"a": {"bind": "x"}}, {}, "unknown key"),
        ({"a b": {}}, {}, "not a valid queue name"),
        ({"a": {"routing_key": "a..b"}}, {}, "dot-separated words"),
        (
            {"a": {"exchange": "x", "exchange_type": "topic"}, "b": {"exchange": "x"}},
            {},
            "an exchange has one type",
        ),
        ({"a": {"broadcast": True, "routing_key": "k"}}, {}, "takes only 'exchange'"),
        ({"a": {}}, {"CREATE_MISSING_QUEUES": False}, "DEFAULT_QUEUE"),
        ("a", {}, "must be a dict"),
        ({}, {"DEFAULT_EXCHANGE_TYPE": "headers"}, "DEFAULT_EXCHANGE_TYPE"),
    ],
)
def test_bad_queue_settings_are_clear_errors(settings, queues, extra, message) -> None:
    _queues(settings, queues, **extra)
    with pytest.raises(ImproperlyConfigured, match=message):
        tq_settings.check()


def test_queues_take_dicts_or_queue_objects(settings) -> None:
    _queues(
        settings,
        [
            "default",
            Queue("feed_tasks", routing_key="feed.#"),
            Queue("images", exchange="media", exchange_type="direct", routing_key="image.resize"),
            Broadcast("everyone"),
        ],
        DEFAULT_EXCHANGE="tasks",
        DEFAULT_EXCHANGE_TYPE="topic",
    )
    topology = tq_settings.QUEUES
    assert topology.get("feed_tasks") == Queue(
        "feed_tasks", exchange="tasks", exchange_type="topic", routing_key="feed.#"
    )
    assert topology.get("everyone") == Queue(
        "everyone", exchange="everyone", exchange_type="fanout", broadcast=True
    )
    assert [q.name for q in topology.bound("tasks", "feed.import")] == ["feed_tasks"]
    assert [q.name for q in topology.bound("tasks", "default")] == ["default"]
    assert topology.consumed(["default", "everyone"], "w1@h") == ["default", "everyone.w1@h"]
    assert topology.broadcast_of("everyone.w1@h") == topology.get("everyone")


# -- resolving a destination at the call ---------------------------------------------------------
FEEDS = {
    "default": {},
    "feed_tasks": {"exchange": "feeds", "exchange_type": "topic", "routing_key": "feed.#"},
    "feed_urgent": {"exchange": "feeds", "exchange_type": "topic", "routing_key": "*.urgent"},
}


def test_a_routing_key_reaches_the_queue_bound_to_it(settings) -> None:
    route = {"exchange": "feeds", "routing_key": "feed.x"}
    _queues(settings, FEEDS, TASK_ROUTES={"tests.testapp.tasks.add": route})
    with capture() as queue:
        record.apply_async(("a",), exchange="feeds", routing_key="feed.import")
        record.apply_async(("b",), exchange="feeds", routing_key="orders.urgent")
        record.apply_async(("c",), queue="feed_tasks")  # a queue alone: straight into it
        add.apply_async((1, 2))  # a route naming an exchange and key
        add.apply_async((1, 2), queue="feed_urgent")  # the call decides all three
        record.apply_async(("d",))
    assert [(m.queue, m.exchange, m.routing_key) for m in queue.messages] == [
        ("feed_tasks", "feeds", "feed.import"),
        ("feed_urgent", "feeds", "orders.urgent"),
        ("feed_tasks", None, None),
        ("feed_tasks", "feeds", "feed.x"),
        ("feed_urgent", None, None),
        ("default", None, None),
    ]


def test_the_default_exchange_and_routing_key(settings) -> None:
    _queues(
        settings,
        {"default": {"routing_key": "task.#"}, "feed_tasks": {"routing_key": "feed.#"}},
        DEFAULT_EXCHANGE="tasks",
        DEFAULT_EXCHANGE_TYPE="topic",
        DEFAULT_ROUTING_KEY="task.default",
    )
    with capture() as queue:
        record.apply_async(("a",), routing_key="feed.import")
        record.apply_async(("b",))
    assert [(m.queue, m.exchange, m.routing_key) for m in queue.messages] == [
        ("feed_tasks", "tasks", "feed.import"),
        ("default", "tasks", "task.default"),
    ]


def test_a_key_that_reaches_nothing_is_an_error_and_records_nothing(settings) -> None:
    _queues(settings, FEEDS)
    with capture() as queue, pytest.raises(QueueNotFound, match="reaches no queue"):
        record.apply_async(("a",), exchange="feeds", routing_key="orders.new")
    assert queue.messages == []


def test_create_missing_queues_off_refuses_an_unknown_queue(settings) -> None:
    _queues(settings, FEEDS, CREATE_MISSING_QUEUES=False)
    with pytest.raises(QueueNotFound, match="'nowhere' is not declared"):
        record.apply_async(("a",), queue="nowhere")
    with pytest.raises(QueueNotFound, match="'nowhere' is not declared"):
        record.apply_async(("a",), routing_key="nowhere")  # the legacy "key names its queue"
    assert not TaskResult.objects.exists()
    with capture() as queue:
        record.apply_async(("b",), queue="feed_tasks")
    assert [m.queue for m in queue.messages] == ["feed_tasks"]


def test_create_missing_queues_on_creates_it(settings) -> None:
    _queues(settings, FEEDS)
    with capture() as queue:
        record.apply_async(("a",), queue="made-up")
        record.apply_async(("b",), routing_key="made-up-too")
    assert [(m.queue, m.exchange) for m in queue.messages] == [
        ("made-up", None),
        ("made-up-too", None),
    ]


def test_a_broadcast_queue_goes_through_its_fanout_exchange(settings) -> None:
    _queues(settings, {"default": {}, "everyone": {"broadcast": True}})
    with capture() as queue:
        record.apply_async(("a",), queue="everyone")
    (message,) = queue.messages
    assert (message.queue, message.exchange) == ("everyone", "everyone")


# -- real workers, every transport ---------------------------------------------------------------
def _cleanup(url: str, queues: list[str], exchanges: list[str]) -> None:
    if url.startswith("amqp"):
        delete_queues(url, queues)
        broker = Broker(url)
        with broker.connection() as conn:
            for name in exchanges:
                try:
                    conn.default_channel.exchange_delete(name)
                except Exception:  # already gone
                    pass


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_a_topic_key_reaches_its_queue_and_not_the_default_one(
    broker_url, queue_name, settings, start_worker
) -> None:
    feed, exchange = f"{queue_name}-feed", f"{queue_name}-x"
    _queues(
        settings,
        {
            queue_name: {},
            feed: {"exchange": exchange, "exchange_type": "topic", "routing_key": "feed.#"},
        },
    )
    try:
        # sent before any worker declared the queue: the publisher declares the binding itself
        result = who_am_i.apply_async(exchange=exchange, routing_key="feed.import")
        start_worker("-P", "solo")  # without -Q: every declared queue
        assert result.get(timeout=20)["queue"] == feed
        assert TaskResult.objects.get(task_id=result.id).queue == feed
        # the default queue got nothing: a marker sent there is the only thing it ever ran
        marker = who_am_i.delay()
        assert marker.get(timeout=20)["queue"] == queue_name
        assert get_broker().depth(feed) == 0 and get_broker().depth(queue_name) == 0
        assert TaskResult.objects.count() == 2
    finally:
        _cleanup(broker_url, [feed], [exchange])


def _copies_exist(url: str, names: list[str]) -> bool:
    """Return whether the workers' broadcast copies are declared (RabbitMQ only)."""
    if not url.startswith("amqp"):
        return True
    with Broker(url).connection() as conn:
        for name in names:
            try:
                conn.default_channel.queue_declare(name, passive=True)
            except Exception:
                return False
    return True


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_a_broadcast_reaches_each_of_two_workers_once(
    broker_url, queue_name, settings, start_worker
) -> None:
    everyone = f"{queue_name}-all"
    _queues(settings, {queue_name: {}, everyone: {"broadcast": True}})
    hosts = [f"one-{queue_name}@test", f"two-{queue_name}@test"]
    copies = [copy_name(everyone, host) for host in hosts]
    try:
        workers = [start_worker("-P", "solo", "-n", host) for host in hosts]
        wait_for(
            lambda: WorkerState.objects.filter(hostname__in=hosts).count() == 2,
            what="both workers' heartbeats",
        )
        wait_for(lambda: _copies_exist(broker_url, copies), what="the workers' broadcast copies")
        record.apply_async(("hello everyone",), queue=everyone)
        wait_for(
            lambda: Execution.objects.filter(label="hello everyone").count() >= 2,
            what="two executions",
        )
        # one each: send a plain task to be sure nothing more is on its way
        add.delay(1, 1).get(timeout=20)
        rows = Execution.objects.filter(label="hello everyone")
        assert sorted(rows.values_list("pid", flat=True)) == sorted(w.pid for w in workers)
    finally:
        _cleanup(broker_url, copies, [everyone])


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_unknown_queues_per_create_missing_queues(
    broker_url, queue_name, settings, start_worker
) -> None:
    other = f"{queue_name}-other"
    _queues(settings, {queue_name: {}}, CREATE_MISSING_QUEUES=False)
    with pytest.raises(QueueNotFound):
        add.apply_async((1, 2), queue=other)
    assert not TaskResult.objects.exists()
    _queues(settings, {queue_name: {}}, CREATE_MISSING_QUEUES=True)
    start_worker("-P", "solo", "-Q", f"{queue_name},{other}")
    assert add.apply_async((1, 2), queue=other).get(timeout=20) == 3
