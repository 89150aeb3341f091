"""Prometheus metrics: a real prefork worker's endpoint, and the Django view of the cluster."""

from __future__ import annotations

import bisect
import datetime as dt
import socket
import time
import urllib.request
import uuid
from dataclasses import replace
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from django_tq import AsyncResult, message, signals, states
from django_tq.broker import get_broker
from django_tq.enqueue import enqueue
from django_tq.execution import execute, record
from django_tq.message import TaskMessage
from django_tq.metrics import tasks as task_metrics
from django_tq.models import DeadLetter
from django_tq.outcome import Outcome
from django_tq.worker.consumer import Consumer, ConsumerConfig
from tests.conftest import wait_for
from tests.testapp.tasks import add, always_retries, fail

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return ``{(sample name, sorted labels): value}`` parsed by prometheus_client's parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def counted(text: str) -> dict[Any, float] | None:
    """Return the scrape once the worker test's ten executions (eight tasks, one run thrice)
    are all in it."""
    samples = scrape(text)
    total = sum(v for (name, _), v in samples.items() if name == "django_tq_tasks_total")
    return samples if total == 10 else None


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_worker_serves_the_task_metrics_of_all_its_consumers(
    start_worker: Any, pool: str
) -> None:
    port = free_port()
    worker = start_worker(
        "-P",
        pool,
        "-c",
        "2",
        "--max-tasks-per-child",
        "2",  # children are recycled: the counts of dead children must stay in the sum
        "--metrics-port",
        str(port),
        "--metrics-address",
        "127.0.0.1",
    )
    ok = [add.delay(i, 1) for i in range(6)]
    bad = fail.delay("expected")
    retried = always_retries.delay()
    assert [r.get(timeout=30) for r in ok] == [1, 2, 3, 4, 5, 6]
    for result in (bad, retried):
        with pytest.raises((ValueError, ConnectionError)):
            result.get(timeout=30)
    assert AsyncResult(retried.id).state == states.FAILURE
    enqueue(TaskMessage(id=str(uuid.uuid4()), task="tests.no_such_task"))
    wait_for(lambda: DeadLetter.objects.count() == 1, what="a dead letter")

    # each child writes what it counted within FLUSH_SECONDS (a recycled child as it stops)
    samples = wait_for(
        lambda: counted(get(f"http://127.0.0.1:{port}/metrics")), what="the tasks counted"
    )
    add_name, fail_name = add.name, fail.name
    retry_name = always_retries.name
    labels = {"queue": "default"}
    assert value(samples, "django_tq_tasks_total", task=add_name, state="SUCCESS", **labels) == 6
    assert value(samples, "django_tq_tasks_total", task=fail_name, state="FAILURE", **labels) == 1
    assert value(samples, "django_tq_tasks_total", task=retry_name, state="RETRY", **labels) == 2
    assert value(samples, "django_tq_tasks_total", task=retry_name, state="FAILURE", **labels) == 1
    assert value(samples, "django_tq_task_retries_total", task=retry_name, **labels) == 2
    assert value(samples, "django_tq_dead_letters_total", queue="default") == 1
    assert value(samples, "django_tq_task_runtime_seconds_count", task=add_name, **labels) == 6
    assert (
        value(samples, "django_tq_task_runtime_seconds_bucket", task=add_name, le="+Inf", **labels)
        == 6
    )
    assert value(samples, "django_tq_task_queue_wait_seconds_count", task=add_name, **labels) == 6
    wait_sum = value(samples, "django_tq_task_queue_wait_seconds_sum", task=add_name, **labels)
    assert wait_sum is not None and 0 < wait_sum < 60

    hostname = f"tq-{worker.pid}@{socket.gethostname()}"
    assert value(samples, "django_tq_worker_info", worker=hostname, pool=pool) == 1
    assert value(samples, "django_tq_worker_concurrency", worker=hostname) == 2
    assert value(samples, "django_tq_worker_busy", worker=hostname) == 0
    assert value(samples, "django_tq_worker_processed_total", worker=hostname) is not None
    restarts = value(samples, "django_tq_worker_child_restarts_total", worker=hostname)
    assert restarts is not None and restarts >= 1
    rss = value(samples, "django_tq_worker_resident_memory_bytes", worker=hostname)
    assert rss is not None and rss > 10 * 1024 * 1024
    assert worker.stop() == 0, worker.output()


def test_the_queue_wait_reads_the_sent_at_header_and_tolerates_a_bad_one() -> None:
    wire = message.encode(TaskMessage(id="a", task="t"))
    decoded = message.decode(wire.headers, wire.body, wire.content_type, queue="q", accept=["json"])
    assert decoded.sent_at is not None and decoded.sent_at.tzinfo is not None
    bad = {**wire.headers, "sent_at": "yesterday"}
    assert (
        message.decode(bad, wire.body, wire.content_type, queue="q", accept=["json"]).sent_at
        is None
    )


def test_without_metrics_no_receiver_is_connected() -> None:
    assert not task_metrics.is_connected()
    for signal in (signals.task_started, signals.task_postrun, signals.task_received):
        uids = [key[0] for key, *_ in signal.receivers]
        assert task_metrics.DISPATCH_UID not in uids
    assert task_metrics.DISPATCH_UID not in [key[0] for key, *_ in post_save.receivers]


def queries_of(task: Any, *args: Any, tally: task_metrics.TaskTally | None = None) -> list[str]:
    """Return the SQL a worker child runs for one message of ``task``: received, executed,
    recorded (result row, retry published), and counted by ``tally`` as the consumer does."""
    sent = TaskMessage(
        id=str(uuid.uuid4()), task=task.name, args=args, sent_at=dt.datetime.now(dt.UTC)
    )
    with CaptureQueriesContext(connection) as captured:
        signals.send(signals.task_received, sender=task, message=sent)
        started_at = time.time()
        outcome = execute(sent, hostname="test")
        record(sent, outcome, worker="test")
        if tally is not None:
            tally.observe(sent, outcome, started_at)
    return [query["sql"] for query in captured.captured_queries]


def test_a_task_with_metrics_on_runs_no_extra_query() -> None:
    calls = [(add, 1, 2), (fail, "expected"), (always_retries,)]
    for call in calls:
        queries_of(*call)  # warm: the first run of each fills Django's caches
    off = {call[0].name: len(queries_of(*call)) for call in calls}
    tally = task_metrics.connect()
    try:
        on = {call[0].name: len(queries_of(*call, tally=tally)) for call in calls}
        tally.flush()
        metrics = tally.metrics
        counted = metrics.tasks.labels(add.name, "default", states.SUCCESS)._value.get()
        failed = metrics.tasks.labels(fail.name, "default", states.FAILURE)._value.get()
        retried = metrics.retries.labels(always_retries.name, "default")._value.get()
    finally:
        task_metrics.disconnect()
    assert (counted, failed, retried) == (1, 1, 1)  # the tally counted them
    assert on == off
    assert all(off.values())  # and each run did reach the database (result rows)


def histogram_samples(histogram: Any) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in histogram.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    ]


def test_the_tally_writes_what_observe_would_have() -> None:
    """One observe() per value, and the tally's counts per bucket, give the same histogram
    (the tally writes prometheus_client's private bucket values: this notices a change)."""
    from prometheus_client import Histogram

    values = [0.0, 0.004, 0.005, 0.0051, 0.3, 7.0, 899.0, 901.0, 1e9]
    one_by_one = Histogram(
        "one", "", ("task",), buckets=task_metrics.RUNTIME_BUCKETS, registry=None
    )
    for seconds in values:
        one_by_one.labels("t").observe(seconds)
    tallied = Histogram("one", "", ("task",), buckets=task_metrics.RUNTIME_BUCKETS, registry=None)
    per_bucket = [0] * (len(task_metrics.RUNTIME_BUCKETS) + 1)
    for seconds in values:
        per_bucket[bisect.bisect_left(task_metrics.RUNTIME_BUCKETS, seconds)] += 1
    task_metrics.add_to_histogram(tallied.labels("t"), per_bucket, sum(values))
    assert histogram_samples(tallied) == histogram_samples(one_by_one)


def test_the_tally_counts_in_memory_and_writes_when_flushed() -> None:
    metrics = task_metrics.build()
    tally = task_metrics.TaskTally(metrics, interval=3600)  # the flusher never comes round
    now = time.time()
    sent = TaskMessage(
        id="a", task="t", queue="q", sent_at=dt.datetime.fromtimestamp(now - 2, dt.UTC)
    )
    later = replace(sent, eta=dt.datetime.fromtimestamp(now - 0.4, dt.UTC))
    tally.observe(sent, Outcome(state=states.SUCCESS, runtime=0.02), now)
    tally.observe(later, Outcome(state=states.RETRY, runtime=0.2), now)
    tally.observe(replace(sent, sent_at=None), Outcome(state=states.FAILURE, runtime=3.0), now)
    tally.observe(sent, Outcome(state=states.REVOKED, expired=True), now)
    assert metrics.tasks.labels("t", "q", states.SUCCESS)._value.get() == 0  # not written yet
    tally.stop()
    assert [
        metrics.tasks.labels("t", "q", s)._value.get() for s in ("SUCCESS", "RETRY", "FAILURE")
    ] == [1, 1, 1]
    assert metrics.retries.labels("t", "q")._value.get() == 1
    assert metrics.tasks.labels("t", "q", states.REVOKED)._value.get() == 1  # expired
    runtime = {
        (name, labels.get("le")): v for name, labels, v in histogram_samples(metrics.runtime)
    }
    assert runtime["django_tq_task_runtime_seconds_count", None] == 3
    assert runtime["django_tq_task_runtime_seconds_sum", None] == pytest.approx(3.22)
    assert runtime["django_tq_task_runtime_seconds_bucket", "0.025"] == 1
    assert runtime["django_tq_task_runtime_seconds_bucket", "0.25"] == 2
    wait = {
        (name, labels.get("le")): v for name, labels, v in histogram_samples(metrics.queue_wait)
    }
    assert wait["django_tq_task_queue_wait_seconds_count", None] == 2  # no sent_at: no wait
    assert wait["django_tq_task_queue_wait_seconds_sum", None] == pytest.approx(
        2.4, abs=0.01
    )  # the ETA
    assert wait["django_tq_task_queue_wait_seconds_bucket", "0.5"] == 1


def test_a_consumer_counts_each_task_once_and_writes_the_counts_as_it_stops() -> None:
    tally = task_metrics.TaskTally(task_metrics.build(), interval=3600)  # no flush till the stop
    results = [add.delay(1, i) for i in range(2)]
    config = ConsumerConfig(
        queues=("default",), prefetch=1, hostname="tally@test", max_tasks=2, observer=tally
    )
    Consumer(get_broker(), config).run()  # returns after two tasks (max_tasks)
    assert [r.get(timeout=5) for r in results] == [1, 2]
    assert tally.metrics.tasks.labels(add.name, "default", states.SUCCESS)._value.get() == 2
    tally.stop()


class BrokenTally:
    def observe(self, message: TaskMessage, outcome: Outcome, started_at: float) -> None:
        raise RuntimeError("broken")

    def flush(self) -> None:
        pass


def test_a_failing_observer_is_logged_and_the_queue_goes_on(caplog: Any) -> None:
    result = add.delay(2, 3)
    config = ConsumerConfig(
        queues=("default",), prefetch=1, hostname="broken@test", max_tasks=1, observer=BrokenTally()
    )
    Consumer(get_broker(), config).run()
    assert result.get(timeout=5) == 5
    assert "Observing tests.testapp.tasks.add" in caplog.text
    assert get_broker().depth("default") == 0  # acked


# -- the Django view ---------------------------------------------------------------------------


@pytest.fixture
def metrics_token(settings: Any) -> str:
    settings.TQ = {**settings.TQ, "METRICS_TOKEN": "s3cret-token"}
    return "s3cret-token"


def test_the_view_needs_a_token_or_a_permission(client: Any, metrics_token: str) -> None:
    assert client.get("/tq/metrics/").status_code == 401
    wrong = client.get("/tq/metrics/", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    right = client.get("/tq/metrics/", headers={"Authorization": f"Bearer {metrics_token}"})
    assert right.status_code == 200
    assert right["Content-Type"].startswith("text/plain")

    user = User.objects.create_user("reader", password="pw")
    client.force_login(user)
    assert client.get("/tq/metrics/").status_code == 401
    user.user_permissions.add(Permission.objects.get(codename="view_metrics"))
    client.force_login(User.objects.get(pk=user.pk))  # a fresh permission cache
    assert client.get("/tq/metrics/").status_code == 200
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get("/tq/metrics/").status_code == 200


def test_the_view_without_a_token_setting_refuses_any_bearer(client: Any) -> None:
    assert client.get("/tq/metrics/", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/tq/metrics/", headers={"Authorization": "Bearer x"}).status_code == 401


def test_the_view_shows_queue_depth_head_age_and_results(
    client: Any, metrics_token: str, settings: Any
) -> None:
    for i in range(3):
        add.delay(i, i)
    response = client.get("/tq/metrics/", headers={"Authorization": f"Bearer {metrics_token}"})
    samples = scrape(response.content.decode())
    assert value(samples, "django_tq_queue_depth", queue="default") == 3
    assert value(samples, "django_tq_queue_consumers", queue="default") == 0
    age = value(samples, "django_tq_queue_oldest_ready_age_seconds", queue="default")
    assert age is not None and 0 <= age < 60
    assert value(samples, "django_tq_results", state=states.QUEUED) == 3
    assert value(samples, "django_tq_workers_alive") == 0
