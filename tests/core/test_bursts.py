"""Publishing in bursts: the reusable publisher, a transaction's on-commit publishes, group
bursts, RabbitMQ confirms waited for once per burst, and compressed messages."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext
from kombu import Connection, Exchange, Queue

import django_tq
from django_tq import AsyncResult, group, states
from django_tq.broker import get_broker
from django_tq.exceptions import PayloadTooLarge, PublishError
from django_tq.models import TaskResult
from tests.conftest import AMQP_URL, require_service, wait_for
from tests.core.test_exchange_routing import _cleanup
from tests.core.test_foreign_producers import foreign_url, publish, task_message
from tests.testapp.models import Execution
from tests.testapp.tasks import add, record


class Boom(Exception):
    pass


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_publisher_sends_bursts_that_real_workers_run(broker_url: str, start_worker: Any) -> None:
    with record.publisher(batch_size=8) as publisher:
        results = [record.apply_async((f"pub-{i}",), publisher=publisher) for i in range(20)]
        assert len(publisher) == 20 - 16  # two bursts of 8 went out already
    assert publisher.sent == [r.id for r in results]  # every id confirmed, in order
    assert {AsyncResult(r.id).state for r in results} == {states.QUEUED}
    with django_tq.publisher() as mixed:  # calls of several tasks
        sums = [add.apply_async((i, i), publisher=mixed) for i in range(5)]
        labels = [record.apply_async(("mixed",), publisher=mixed)]
    worker = start_worker("-P", "threads", "-c", "2")
    assert [s.get(timeout=30) for s in sums] == [0, 2, 4, 6, 8]
    for result in [*results, *labels]:
        result.get(timeout=30)
    assert Execution.objects.filter(label__startswith="pub-").count() == 20
    assert worker.stop() == 0, worker.output()


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_a_transactions_publishes_go_out_after_the_commit_without_the_rolled_back_ones(
    broker_url: str, start_worker: Any
) -> None:
    with transaction.atomic():
        kept = [record.delay(f"commit-{i}") for i in range(6)]
        try:
            with transaction.atomic():  # a savepoint rolled back: its publish never happens
                dropped = record.delay("commit-dropped")
                raise Boom
        except Boom:
            pass
        kept.append(record.delay("commit-6"))
    with pytest.raises(Boom), transaction.atomic():
        never = record.delay("commit-never")
        raise Boom
    worker = start_worker("-P", "threads", "-c", "2")
    for result in kept:
        result.get(timeout=30)
    assert Execution.objects.filter(label__startswith="commit-").count() == 7
    assert not Execution.objects.filter(label__in=["commit-dropped", "commit-never"]).exists()
    assert AsyncResult(dropped.id).state == AsyncResult(never.id).state == states.PENDING
    assert worker.stop() == 0, worker.output()


def _result_inserts(queries: CaptureQueriesContext) -> list[str]:
    table = TaskResult._meta.db_table
    return [q["sql"] for q in queries if q["sql"].startswith("INSERT") and table in q["sql"]]


@pytest.mark.django_db(transaction=True)
def test_a_burst_records_its_queued_rows_in_one_statement(settings: Any) -> None:
    settings.TQ = {**settings.TQ, "BROKER_URL": "memory://"}
    with CaptureQueriesContext(connections["default"]) as queries, add.publisher() as publisher:
        ids = [add.apply_async((i, 1), publisher=publisher).id for i in range(25)]
    inserts = _result_inserts(queries)
    assert len(inserts) == 1
    assert TaskResult.objects.filter(task_id__in=ids, state=states.QUEUED).count() == 25
    frozen = group(add.s(i, i) for i in range(10))
    with CaptureQueriesContext(connections["default"]) as queries:
        result = frozen.apply_async()
    inserts = _result_inserts(queries)
    assert len(inserts) == 1
    assert TaskResult.objects.filter(group_id=result.id, state=states.QUEUED).count() == 10


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_the_queued_row_lives_on_the_results_alias_and_follows_the_callers_transaction(
    settings: Any,
) -> None:
    # Results are on "default"; the caller's transaction is on "other". The row is written on
    # "default" after "other" commits (before the publish), so a rollback leaves no row (and on
    # SQLite nothing waits for the writer "other" holds).
    settings.TQ = {**settings.TQ, "BROKER_URL": "memory://"}
    with transaction.atomic(using="other"):
        result = add.apply_async((1, 2), using="other")
        assert not TaskResult.objects.filter(task_id=result.id).exists()
    assert TaskResult.objects.get(task_id=result.id).state == states.QUEUED
    with pytest.raises(Boom), transaction.atomic(using="other"):
        rolled_back = add.apply_async((1, 2), using="other")
        raise Boom
    assert not TaskResult.objects.filter(task_id=rolled_back.id).exists()
    with transaction.atomic():  # on the results alias too: the burst's rows, after the commit
        same = [add.apply_async((1, i)) for i in range(3)]
        assert not TaskResult.objects.filter(task_id=same[0].id).exists()
    assert TaskResult.objects.filter(task_id__in=[r.id for r in same]).count() == 3


def test_an_unknown_compression_is_refused_at_the_call_site(db: Any, settings: Any) -> None:
    settings.TQ = {**settings.TQ, "BROKER_URL": "memory://"}
    with pytest.raises(ValueError, match=r"Unknown compression 'snappy'.*gzip"):
        add.apply_async((1, 2), compression="snappy")
    assert not TaskResult.objects.exists()


def test_the_payload_limit_counts_the_compressed_body(db: Any, settings: Any) -> None:
    settings.TQ = {**settings.TQ, "BROKER_URL": "memory://", "MAX_PAYLOAD_BYTES": 4096}
    big = "a" * 20_000
    with pytest.raises(PayloadTooLarge):
        record.apply_async((big,))
    record.apply_async((big,), compression="gzip")  # ~100 bytes once compressed


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_compressed_messages_run_in_a_real_worker(broker_url: str, start_worker: Any) -> None:
    worker = start_worker("-P", "threads", "-c", "2")
    for name in ("gzip", "bzip2", "zlib"):
        assert add.apply_async((20, 22), compression=name).get(timeout=30) == 42
    big = "z" * 50_000  # add() of strings joins them
    assert add.apply_async((big, "!"), compression="gzip").get(timeout=30) == big + "!"
    # A plain kombu producer's compressed message (kombu sets the compression header).
    task_id = str(uuid.uuid4())
    message = task_message(task_id, add.name, '{"args": [1, 2], "kwargs": {}}')
    publish(foreign_url(broker_url), django_tq_queue(), compression="gzip", **message)
    assert AsyncResult(task_id).get(timeout=30) == 3
    assert worker.stop() == 0, worker.output()


def django_tq_queue() -> str:
    from django_tq.conf import tq_settings

    return str(tq_settings.DEFAULT_QUEUE)


def _reject_publish_queue(name: str, length: int) -> None:
    """Declare ``name`` on RabbitMQ so that it nacks every publish beyond ``length`` messages."""
    with Connection(AMQP_URL) as conn:
        Queue(
            name,
            Exchange(name, type="direct"),
            routing_key=name,
            durable=True,
            queue_arguments={"x-max-length": length, "x-overflow": "reject-publish"},
        )(conn.default_channel).declare()


@pytest.mark.django_db(transaction=True)
def test_rabbitmq_nacks_fail_the_burst_and_name_the_messages(settings: Any) -> None:
    require_service("RabbitMQ", 5672)
    queue = f"q-{uuid.uuid4().hex[:10]}"
    settings.TQ = {**settings.TQ, "BROKER_URL": AMQP_URL, "DEFAULT_QUEUE": queue}
    _reject_publish_queue(queue, 2)
    broker = get_broker()
    broker._producer()
    broker._local.declared.add(queue)  # ours would declare it with other arguments
    try:
        publisher = add.publisher()
        with pytest.raises(PublishError, match="refused") as raised, publisher:
            results = [add.apply_async((i, i), publisher=publisher) for i in range(5)]
        assert publisher.sent == [r.id for r in results[:2]]
        assert raised.value.failed == tuple(r.id for r in results[2:])
        assert [AsyncResult(r.id).state for r in results] == [states.QUEUED] * 2 + [
            states.FAILURE
        ] * 3
        with pytest.raises(PublishError, match="refused"):  # one by one: the same wait
            add.delay(1, 1)
        assert broker.depth(queue) == 2
    finally:
        with Connection(AMQP_URL) as conn:
            conn.default_channel.queue_delete(queue)


@pytest.mark.django_db(transaction=True)
def test_rabbitmq_confirms_of_a_burst_are_waited_for_once(settings: Any) -> None:
    require_service("RabbitMQ", 5672)
    queue = f"q-{uuid.uuid4().hex[:10]}"
    settings.TQ = {**settings.TQ, "BROKER_URL": AMQP_URL, "DEFAULT_QUEUE": queue}
    broker = get_broker()
    try:
        add.delay(0, 0)
        confirms = broker._local.confirms
        waits = []
        real_wait = confirms.wait
        confirms.wait = lambda timeout: waits.append(1) or real_wait(timeout)
        with add.publisher(batch_size=1000) as publisher:
            for i in range(300):
                add.apply_async((i, i), publisher=publisher)
        assert len(publisher.sent) == 300
        assert waits == [1]  # one wait for 300 confirms
        assert confirms.unsettled() == []
        assert broker.depth(queue) == 301
    finally:
        with Connection(AMQP_URL) as conn:
            conn.default_channel.queue_delete(queue)


@pytest.mark.django_db(transaction=True)
def test_a_channel_rabbitmq_closes_fails_the_burst_and_the_next_publish_works(
    settings: Any,
) -> None:
    require_service("RabbitMQ", 5672)
    queue = f"q-{uuid.uuid4().hex[:10]}"
    good = f"{queue}-good"
    exchange = f"{queue}-x"
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": AMQP_URL,
        "DEFAULT_QUEUE": queue,
        "QUEUES": {queue: {"exchange": exchange, "routing_key": queue}, good: {}},
    }
    route = {"exchange": exchange, "routing_key": queue}
    broker = get_broker()
    try:
        add.apply_async((0, 0), **route)  # declares the exchange once for this process
        with Connection(AMQP_URL) as conn:  # a publish to a missing exchange closes the channel
            conn.default_channel.exchange_delete(exchange)
        publisher = add.publisher()
        closed = pytest.raises(PublishError, match="closed the publishing channel")
        with closed as raised, publisher:
            results = [add.apply_async((i, i), publisher=publisher, **route) for i in range(3)]
        assert raised.value.failed == tuple(r.id for r in results)
        assert publisher.sent == []
        assert {AsyncResult(r.id).state for r in results} == {states.FAILURE}
        assert broker.depth(queue) == 1  # only the first call's
        assert add.apply_async((1, 1), queue=good).id  # a new channel: publishing goes on
        assert broker.depth(good) == 1
    finally:
        with Connection(AMQP_URL) as conn:
            conn.default_channel.queue_delete(queue)
            conn.default_channel.queue_delete(good)
            conn.default_channel.exchange_delete(exchange)


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_routed_calls_go_out_in_the_burst_one_copy_per_queue_reached(
    broker_url: str, queue_name: str, settings: Any, start_worker: Any
) -> None:
    feeds, imports, exchange = f"{queue_name}-feeds", f"{queue_name}-imports", f"{queue_name}-x"
    topic = {"exchange": exchange, "exchange_type": "topic"}
    settings.TQ = {
        **settings.TQ,
        "QUEUES": {
            queue_name: {},
            feeds: {**topic, "routing_key": "feed.#"},
            imports: {**topic, "routing_key": "*.import"},
        },
    }
    broker = get_broker()
    try:
        with record.publisher() as publisher:  # sent before any worker declared the queues
            both = [
                record.apply_async(
                    (f"routed-{i}",),
                    exchange=exchange,
                    routing_key="feed.import",
                    publisher=publisher,
                )
                for i in range(5)
            ]
            one = record.apply_async(
                ("routed-rss",), exchange=exchange, routing_key="feed.rss", publisher=publisher
            )
            plain = record.apply_async(("plain",), publisher=publisher)
            assert broker.depth(feeds) == 0  # nothing sent before the flush
        assert publisher.sent == [r.id for r in [*both, one, plain]]
        assert (broker.depth(feeds), broker.depth(imports), broker.depth(queue_name)) == (6, 5, 1)
        start_worker("-P", "solo")  # every declared queue
        for result in [*both, one, plain]:
            result.get(timeout=30)
        wait_for(lambda: broker.depth(feeds) + broker.depth(imports) == 0, what="drained copies")
        # a copy of a task that already ran is skipped: each call ran once
        assert Execution.objects.filter(label__startswith="routed-").count() == 6
    finally:
        _cleanup(broker_url, [feeds, imports], [exchange])
