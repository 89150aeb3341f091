"""Worker behaviours: supervision, connections, housekeeping."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading
import time

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from django_tq import parking, states
from django_tq.broker import get_broker
from django_tq.models import QueueMessage, TaskResult, WorkerState
from django_tq.worker.consumer import Consumer, ConsumerConfig
from django_tq.worker.worker import Worker, WorkerConfig
from tests.conftest import child_pids, wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import (
    add,
    close_my_connection,
    early_ack,
    hold_memory,
    record,
    slow_record,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.db
def test_a_killed_child_is_replaced_and_its_message_released_at_once(start_worker):
    # The lease is a minute long: the task comes back quickly only because the parent releases it.
    worker = start_worker("-P", "prefork", "-c", "1")
    result = slow_record.delay(0.5, "orphan")
    wait_for(lambda: Execution.objects.filter(label="start:orphan").exists(), what="task start")
    (child,) = child_pids(worker.pid)
    os.kill(child, signal.SIGKILL)
    assert result.get(timeout=20) == "orphan"
    assert Execution.objects.filter(label="start:orphan").count() == 2
    assert Execution.objects.filter(label="end:orphan").count() == 1
    assert "Released 1 message(s)" in worker.output()
    assert child_pids(worker.pid) != [child]


@pytest.mark.db
def test_a_task_closing_its_own_connection_does_not_break_consumption(start_worker):
    start_worker("-P", "solo")
    assert close_my_connection.delay().get(timeout=20) == "closed"
    assert add.delay(1, 1).get(timeout=20) == 2


@pytest.mark.db
def test_a_consumer_drops_a_connection_the_database_closed():
    # A database restart leaves the consumer thread's Django connection closed under it, and
    # django:// declares the queue through that connection when the consumer subscribes again.
    if connection.vendor != "postgresql":
        pytest.skip("a connection the server closed is reproduced with psycopg here")
    result = add.delay(2, 3)
    connection.ensure_connection()
    connection.connection.close()
    consumer = Consumer(
        get_broker(), ConsumerConfig(queues=("default",), prefetch=1, hostname="closed@test")
    )
    seen: dict[str, int] = {}

    def watch() -> None:
        try:
            seen["value"] = result.get(timeout=20)
        finally:
            consumer.stop()

    watcher = threading.Thread(target=watch)
    watcher.start()
    consumer.run()  # the main thread: it owns the closed connection
    watcher.join(30)
    assert seen == {"value": 5}


@pytest.mark.db
def test_heartbeat_row_tracks_the_worker(start_worker):
    worker = start_worker("-P", "threads", "-c", "2", "-n", "hb@test", "-Q", "default,other")
    add.delay(1, 2).get(timeout=20)
    state = wait_for(
        lambda: WorkerState.objects.filter(hostname="hb@test").first(), what="heartbeat row"
    )
    assert (
        state.pool == "threads" and state.concurrency == 2 and state.queues == ["default", "other"]
    )
    assert state.is_alive()
    worker.stop()
    state.refresh_from_db()
    assert state.stopped_at is not None and not state.is_alive()
    assert state.processed == 1


@pytest.mark.db
def test_worker_deletes_expired_results_without_beat(settings, start_worker):
    settings.TQ = {**settings.TQ, "RESULT_EXPIRES": 3600}
    old = TaskResult.objects.create(task_id="old", task_name="x", state=states.SUCCESS)
    TaskResult.objects.filter(pk=old.pk).update(date_done=timezone.now() - dt.timedelta(hours=2))
    TaskResult.objects.create(
        task_id="fresh", task_name="x", state=states.SUCCESS, date_done=timezone.now()
    )
    TaskResult.objects.create(task_id="unfinished", task_name="x", state=states.QUEUED)
    start_worker("-P", "solo")
    wait_for(lambda: not TaskResult.objects.filter(task_id="old").exists(), what="cleanup")
    assert set(TaskResult.objects.values_list("task_id", flat=True)) == {"fresh", "unfinished"}


def test_acks_late_false_acks_before_running(start_worker):
    start_worker("-P", "solo")
    assert early_ack.delay().get(timeout=20) == 1
    assert not QueueMessage.objects.exists()


@pytest.mark.db
def test_purge_deletes_waiting_messages(start_worker):
    record.delay("purged")
    start_worker("-P", "solo", "--purge")
    add.delay(1, 1).get(timeout=20)
    assert not Execution.objects.filter(label="purged").exists()


def test_max_tasks_per_child_recycles_the_child(start_worker):
    worker = start_worker("-P", "prefork", "-c", "1", "--max-tasks-per-child", "2")
    (first_child,) = child_pids(worker.pid)
    for i in range(5):
        record.delay(f"r{i}").get(timeout=20)
    pids = set(Execution.objects.values_list("pid", flat=True))
    assert first_child in pids and len(pids) >= 2


def test_max_memory_per_child_replaces_the_child_after_the_task_that_grew_it(start_worker):
    limit = 200_000  # KiB: far above an idle child, far below the task's allocation
    worker = start_worker("-P", "prefork", "-c", "1", "--max-memory-per-child", str(limit))
    (first_child,) = child_pids(worker.pid)
    assert record.delay("before").get(timeout=20) == "before"
    hog = hold_memory.delay(limit)
    assert hog.get(timeout=30) == first_child  # the task finished and its result was recorded
    assert record.delay("after").get(timeout=20) == "after"
    pids = dict(Execution.objects.values_list("label", "pid"))
    assert pids["before"] == pids["hog"] == first_child != pids["after"]
    assert Execution.objects.filter(label="hog").count() == 1  # acked: never run again
    assert "over --max-memory-per-child" in worker.output()


def test_sighup_restarts_children(start_worker):
    worker = start_worker("-P", "prefork", "-c", "1")
    (before,) = child_pids(worker.pid)
    worker.signal(signal.SIGHUP)
    wait_for(
        lambda: child_pids(worker.pid) and child_pids(worker.pid) != [before], what="new child"
    )
    assert add.delay(2, 2).get(timeout=20) == 4


def test_second_signal_is_a_cold_shutdown_that_requeues(start_worker):
    worker = start_worker("-P", "prefork", "-c", "1")
    result = slow_record.delay(30, "cold")
    wait_for(lambda: Execution.objects.filter(label="start:cold").exists(), what="task start")
    worker.signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.signal(signal.SIGTERM)
    worker.process.wait(20)
    message = QueueMessage.objects.get()
    assert message.lease_owner is None  # back on the queue at once, not after the lease
    assert TaskResult.objects.get(task_id=result.id).state == states.STARTED


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_threads_and_solo_replace_recycled_consumers(start_worker, pool):
    worker = start_worker("-P", pool, "-c", "1", "--max-tasks-per-child", "1")
    for i in range(3):
        assert record.delay(f"t{i}").get(timeout=20) == f"t{i}"
    worker.signal(signal.SIGHUP)
    assert add.delay(1, 2).get(timeout=20) == 3
    assert worker.stop() == 0


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_leases_are_renewed_after_a_reconnect(broker_url, settings, start_worker):
    import redis

    settings.TQ = {**settings.TQ, "LEASE_SECONDS": 2}
    worker = start_worker("-P", "solo")
    assert add.delay(1, 1).get(timeout=20) == 2
    admin = redis.Redis.from_url(broker_url)
    own = admin.client_id()
    db = str(admin.connection_pool.connection_kwargs["db"])
    for client in admin.client_list():  # drop the worker's connections, as a Redis restart would
        if client["db"] == db and int(client["id"]) != own:
            admin.client_kill_filter(_id=client["id"])
    assert add.delay(2, 2).get(timeout=20) == 4  # the worker reconnected by itself
    result = slow_record.delay(5, "long")  # 2.5 leases: runs twice unless renewals reach it
    wait_for(lambda: Execution.objects.filter(label="start:long").exists(), what="long task start")
    start_worker("-P", "solo")  # would take the message over if its lease ran out
    assert result.get(timeout=30) == "long"
    assert add.delay(3, 3).get(timeout=20) == 6
    assert Execution.objects.filter(label="start:long").count() == 1
    output = worker.output()
    assert "Consuming from the broker failed" in output  # one line when the outage starts
    assert "Consuming from the broker works again" in output  # and one when it ends


def test_a_failing_housekeeping_step_backs_off_and_logs_once_per_outage(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="django_tq.worker")
    worker = Worker(get_broker(), WorkerConfig(queues=("default",), concurrency=1, pool="threads"))
    attempts: list[float] = []
    failure: list[Exception] = [OperationalError("database is locked")]

    def release_due(broker: object) -> int:
        attempts.append(now)
        if failure:
            raise failure[0]
        return 0

    monkeypatch.setattr(parking, "release_due", release_due)
    start = 1000.0
    for step in range(24):  # six seconds of ticks, a quarter of a second apart
        now = start + step * 0.25
        worker.tick(now)
    assert [t - start for t in attempts] == [0.0, 0.5, 1.5, 3.5]  # backed off: 0.5, 1, 2 s
    assert WorkerState.objects.filter(hostname=worker.hostname).exists()

    failure.clear()
    now = start + 10
    worker.tick(now)
    records = [r for r in caplog.records if "release_parked" in r.getMessage()]
    assert [(r.levelname, r.exc_info is None) for r in records if r.levelno > logging.DEBUG] == [
        ("WARNING", True),
        ("INFO", True),
    ]
    assert "database is locked" in records[0].getMessage()
    assert "works again" in records[-1].getMessage()

    failure.append(ValueError("a bug"))  # not the database: its traceback shows, once
    caplog.clear()
    for step in range(40):
        now = start + 20 + step * 0.25
        worker.tick(now)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "release_parked" in errors[0].getMessage()


def test_sigusr1_logs_the_stack_of_every_thread_as_one_record(tmp_path, start_worker):
    log = tmp_path / "worker.log"
    worker = start_worker("-P", "threads", "-c", "2", env={"TQ_TEST_LOG_FILE": str(log)})
    worker.signal(signal.SIGUSR1)

    def dumps() -> list[str]:
        records = log.read_text().split("@@record ")
        return [record for record in records if "SIGUSR1: the stacks of" in record]

    wait_for(dumps, what="the stack dump in the worker's log")
    (dump,) = dumps()  # one record
    assert dump.startswith(f"WARNING django_tq.worker {worker.pid}\n")
    assert 'Thread "MainThread"' in dump and 'Thread "django_tq-consumer-1"' in dump
    assert "in run" in dump and "in _on_usr1" not in dump  # where it was, not the handler
    assert "most recent call first" not in worker.output()  # not faulthandler's dump on stderr


def test_sigusr1_to_a_prefork_child_logs_its_own_stack(tmp_path, start_worker):
    log = tmp_path / "worker.log"
    worker = start_worker("-P", "prefork", "-c", "1", env={"TQ_TEST_LOG_FILE": str(log)})
    first = record.delay("pid")
    assert first.get(timeout=20) == "pid"
    child = Execution.objects.get(task_id=first.id).pid
    os.kill(child, signal.SIGUSR1)
    wait_for(lambda: f"WARNING django_tq.worker {child}\nSIGUSR1" in log.read_text(), what="dump")
    assert worker.process.poll() is None
    assert record.delay("still").get(timeout=20) == "still"  # the child lives on


def test_the_first_tick_before_the_fork_leaves_the_sample_and_the_cleanup_for_after_it():
    # The heartbeat (and what else loads the caches the children share) runs before the
    # consumers start; the queue sample and the results cleanup, round trips only, run in the
    # first tick after: the first task does not wait for them (docs/performance.md).
    worker = Worker(get_broker(), WorkerConfig(queues=("default",), concurrency=1, pool="threads"))
    order: list[str] = []
    heartbeat, start = worker.heartbeat, worker.pool.start

    def record_heartbeat(stopped: bool = False) -> None:
        order.append("heartbeat")
        heartbeat(stopped)

    def record_start() -> None:
        order.append("pool.start")
        start()

    def sample() -> int:
        order.append("sample")
        return 0

    def cleanup(batches: int = 10) -> int:
        order.append("cleanup")
        worker.request_stop()
        return 0

    worker.heartbeat = record_heartbeat  # type: ignore[method-assign]
    worker.pool.start = record_start  # type: ignore[method-assign]
    worker.sample_queues = sample  # type: ignore[method-assign]
    worker.cleanup = cleanup  # type: ignore[method-assign]
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1)
    handlers = {sig: signal.getsignal(sig) for sig in handled}  # run() installs its own
    try:
        assert worker.run() == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert order[:5] == ["heartbeat", "pool.start", "sample", "cleanup", "heartbeat"]
