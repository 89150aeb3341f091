"""``tqworker --accept-celery`` runs what a real Celery producer publishes, on RabbitMQ and Redis.

The producer is Celery itself (a ``Celery`` app with tasks of the same names, no result backend),
publishing into the queue a django_tq worker drains: ``add.delay(2, 3)``, a countdown, a task that
retries and a chain. Messages the worker cannot honour (pickle, an unknown task, a chord) are
dead-lettered with the reason and never run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.utils import timezone

from django_tq import AsyncResult, states
from django_tq.models import DeadLetter, ParkedMessage, TaskResult
from tests.conftest import AMQP_URL, REDIS_URL, delete_queues, require_service, wait_for
from tests.testapp.models import Execution

celery = pytest.importorskip("celery")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _never_run_here(*args: Any, **kwargs: Any) -> None:
    """The producer's stand-in for each task: only django_tq's worker runs them."""
    raise AssertionError("a producer-side task body ran")


#: the brokers Celery and django_tq share: URL, service name, port
BROKERS = {"redis": (REDIS_URL, "Redis", 6379), "amqp": (AMQP_URL, "RabbitMQ", 5672)}


@pytest.fixture(params=list(BROKERS))
def celery_broker_url(
    request: pytest.FixtureRequest, settings: Any, queue_name: str
) -> Iterator[str]:
    """Each shared broker in turn, on a queue of the test's own (deleted afterwards)."""
    url, service, port = BROKERS[request.param]
    require_service(service, port)
    settings.TQ = {**settings.TQ, "BROKER_URL": url, "DEFAULT_QUEUE": queue_name}
    yield url
    delete_queues(url, [queue_name])
    if request.param == "redis":  # what Celery's producer left: kombu's list and binding
        redis.Redis.from_url(url).delete(queue_name, f"_kombu.binding.{queue_name}")


@pytest.fixture
def producer(celery_broker_url: str, settings: Any) -> Iterator[Any]:
    """A Celery app publishing into the test's queue on the test's broker."""
    app = celery.Celery("producer", broker=celery_broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.TQ["DEFAULT_QUEUE"],
        task_serializer="json",
        accept_content=["json", "pickle"],
        # RabbitMQ: the queue as django_tq declares it (x-max-priority 10)
        task_queue_max_priority=10,
        broker_connection_retry_on_startup=False,
    )
    for name in ("add", "mul", "flaky_until_third", "record", "fail", "on_error"):
        app.task(name=f"tests.testapp.tasks.{name}", shared=False, typing=False)(_never_run_here)
    yield app
    app.close()


def result_of(task_id: str, timeout: float = 30) -> TaskResult:
    return wait_for(
        lambda: TaskResult.objects.filter(task_id=task_id, state__in=states.READY_STATES).first(),
        timeout,
        what=f"result of {task_id}",
    )


def test_celery_messages_run_and_their_results_are_stored_here(
    producer: Any, start_worker: Any
) -> None:
    start_worker("-P", "threads", "-c", "2", "--accept-celery")
    tasks = producer.tasks
    added = tasks["tests.testapp.tasks.add"].delay(2, 3)
    assert AsyncResult(added.id).get(timeout=30) == 5

    sent = time.time()
    later = tasks["tests.testapp.tasks.add"].apply_async((1, 1), countdown=2)
    row = result_of(later.id)
    assert AsyncResult(later.id).get(timeout=1) == 2
    assert row.date_started is not None and row.date_started.timestamp() >= sent + 1.9

    flaky = tasks["tests.testapp.tasks.flaky_until_third"].delay()
    assert AsyncResult(flaky.id).get(timeout=30) == 2  # retried twice, by django_tq
    assert Execution.objects.filter(task_id=flaky.id).count() == 3

    steps = celery.chain(
        tasks["tests.testapp.tasks.add"].s(2, 3), tasks["tests.testapp.tasks.mul"].s(10)
    ).apply_async()
    assert AsyncResult(steps.id).get(timeout=30) == 50
    assert AsyncResult(steps.parent.id).get(timeout=1) == 5
    assert TaskResult.objects.get(task_id=steps.id).root_id == steps.parent.id

    linked = tasks["tests.testapp.tasks.add"].apply_async(
        (1, 2), link=tasks["tests.testapp.tasks.mul"].s(3)
    )
    callback = wait_for(
        lambda: TaskResult.objects.filter(
            task_name="tests.testapp.tasks.mul", parent_id=linked.id, state=states.SUCCESS
        ).first(),
        30,
        what="the callback's result",
    )
    assert AsyncResult(callback.task_id).get(timeout=1) == 9
    failing = tasks["tests.testapp.tasks.fail"].apply_async(
        ("no",), link_error=tasks["tests.testapp.tasks.on_error"].s()
    )
    errback = wait_for(lambda: Execution.objects.filter(task_id=failing.id).first(), 30)
    assert errback.label == "errback:ValueError:no"


def test_a_countdown_beyond_the_eta_horizon_is_parked_not_held(
    producer: Any, start_worker: Any, settings: Any
) -> None:
    settings.TQ = {**settings.TQ, "ETA_HORIZON_SECONDS": 1}
    start_worker("-P", "threads", "-c", "1", "--accept-celery")
    later = producer.tasks["tests.testapp.tasks.add"].apply_async((4, 5), countdown=4)
    parked = wait_for(lambda: ParkedMessage.objects.filter(task_id=later.id).first(), 30)
    assert parked.due_at > timezone.now()  # acked at the broker, waiting in the table
    assert AsyncResult(later.id).get(timeout=30) == 9
    assert TaskResult.objects.get(task_id=later.id).date_started >= parked.due_at


def test_what_cannot_be_honoured_is_dead_lettered_with_the_reason(
    producer: Any, start_worker: Any
) -> None:
    start_worker("-P", "threads", "-c", "2", "--accept-celery")
    record = producer.tasks["tests.testapp.tasks.record"]
    pickled = record.apply_async(kwargs={"label": "pickled"}, serializer="pickle")
    unknown = producer.send_task("proj.tasks.not_here", (1,))
    in_chord = producer.send_task(
        "tests.testapp.tasks.record",
        kwargs={"label": "chord"},
        chord=record.s(),
    )
    wait_for(lambda: DeadLetter.objects.count() == 3, 30, what="three dead letters")
    reasons = {letter.task_id: letter.reason for letter in DeadLetter.objects.all()}
    assert "never pickle" in reasons[pickled.id]
    assert reasons[unknown.id].startswith("unknown task")
    assert "chord" in reasons[in_chord.id]
    assert not Execution.objects.exists()  # none of them ran, not even in part
    # and a good message after them still runs
    done = producer.tasks["tests.testapp.tasks.add"].delay(20, 22)
    assert AsyncResult(done.id).get(timeout=30) == 42


def test_without_accept_celery_a_celery_message_is_dead_lettered(
    producer: Any, start_worker: Any
) -> None:
    start_worker("-P", "threads", "-c", "1")
    sent = producer.tasks["tests.testapp.tasks.record"].apply_async(kwargs={"label": "x"})
    if producer.conf.broker_url.startswith("redis"):
        # kombu's lists are not read at all without --accept-celery: the message waits there
        time.sleep(2)
        assert not DeadLetter.objects.exists() and not Execution.objects.exists()
        return
    letter = wait_for(lambda: DeadLetter.objects.filter(task_id=sent.id).first(), 30)
    assert "not a django_tq message" in letter.reason
    assert not Execution.objects.exists()
