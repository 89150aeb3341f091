"""A database that fails under a consumer loses no message: it goes back to its queue.

Whatever recording STARTED, the result or a dead letter raises (a result table dropped or renamed
under a running worker, a lost connection, a broken constraint), the message is not acked: the
consumer gives it back and backs off, and once the database works again the task runs (once,
when it had not started) or is dead-lettered as it would have been.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    connection,
)

from django_tq import AsyncResult, states
from django_tq.broker import get_broker
from django_tq.message import TaskMessage, WireMessage, encode
from django_tq.models import DeadLetter, TaskResult
from django_tq.result_backends import DatabaseBackend
from django_tq.worker.consumer import Consumer, ConsumerConfig
from tests.conftest import wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]

MISSING = 'relation "django_tq_taskresult" does not exist'


class Failing:
    """Stands in for a database call: raises ``error`` while :attr:`on`, counting the calls."""

    def __init__(self, real: Callable[..., Any], error: Exception) -> None:
        self.real, self.error = real, error
        self.on = True
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.on:
            return self.real(*args, **kwargs)
        self.calls += 1
        raise self.error

    @property
    def method(self) -> Callable[..., Any]:
        """Return it as a method, to set on a class."""

        def method(instance: Any, *args: Any, **kwargs: Any) -> Any:
            return self(instance, *args, **kwargs)

        return method


def _config(queue: str, **kwargs: Any) -> ConsumerConfig:
    return ConsumerConfig(
        queues=(queue,), prefetch=1, hostname="give-back@test", drain_timeout=0.2, **kwargs
    )


def _run_while_failing(queue: str, failing: Failing, calls: int) -> None:
    """Run a consumer of ``queue`` until ``failing`` raised ``calls`` times, then stop it."""
    consumer = Consumer(get_broker(), _config(queue))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as exc:  # the old behaviour: the failure ended the consumer
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: failing.calls >= calls or bool(errors), 30, what=f"{calls} failures")
    finally:
        consumer.stop()
        thread.join(30)
    assert not errors, f"the consumer ended: {errors[0]!r}"
    assert consumer._handling_outage.failures >= calls  # backed off between attempts


def _run_until_done(queue: str, tasks: int) -> None:
    Consumer(get_broker(), _config(queue, max_tasks=tasks)).run()


def _run_until(queue: str, condition: Callable[[], bool]) -> None:
    consumer = Consumer(get_broker(), _config(queue))

    def watch() -> None:
        try:
            wait_for(condition, 10)
        finally:
            consumer.stop()

    watcher = threading.Thread(target=watch)
    watcher.start()
    consumer.run()
    watcher.join(15)


def _on_the_queue(queue: str, count: int = 1) -> None:
    wait_for(lambda: get_broker().depth(queue) == count, 10, what=f"{count} on the queue")


@pytest.fixture
def two_deliveries(settings: Any) -> None:
    """MAX_DELIVERIES 2: a third counted delivery would be dead-lettered (or, before, lost).

    Not 1: a redelivered AMQP message counts as 2 when no STARTED row says more.
    """
    settings.TQ = {**settings.TQ, "MAX_DELIVERIES": 2}


@pytest.fixture
def failing_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Exception], Failing]]:
    def install(error: Exception) -> Failing:
        failing = Failing(DatabaseBackend.mark_started, error)
        monkeypatch.setattr(DatabaseBackend, "mark_started", failing.method)
        return failing

    yield install


def test_a_failing_started_write_gives_the_message_back_uncounted(
    broker_url, queue_name, two_deliveries, failing_start
):
    result = record.delay("once")
    failing = failing_start(ProgrammingError(MISSING))
    _run_while_failing(queue_name, failing, calls=3)
    _on_the_queue(queue_name)
    assert Execution.objects.count() == 0
    failing.on = False  # the table is back
    _run_until_done(queue_name, 1)
    assert result.get(timeout=5) == "once"
    assert Execution.objects.filter(label="once").count() == 1
    # the failures did not count (a redelivered AMQP message counts as 2, however often it was)
    counted = 2 if broker_url.startswith("amqp") else 1
    assert TaskResult.objects.get(task_id=result.id).delivery_count == counted
    assert not DeadLetter.objects.exists()
    assert get_broker().depth(queue_name) == 0


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
@pytest.mark.parametrize(
    "error",
    [
        ProgrammingError(MISSING),
        InterfaceError("connection already closed"),
        IntegrityError("duplicate key value violates unique constraint"),
        DataError("value too long for type character varying(255)"),
        OperationalError("server closed the connection unexpectedly"),
        DatabaseError("(1969, 'Query execution was interrupted')"),  # MariaDB's max_statement_time
    ],
    ids=lambda error: type(error).__name__,
)
def test_no_database_error_loses_the_message(
    broker_url, queue_name, two_deliveries, failing_start, error
):
    result = record.delay("once")
    failing = failing_start(error)
    _run_while_failing(queue_name, failing, calls=2)
    _on_the_queue(queue_name)
    failing.on = False
    _run_until_done(queue_name, 1)
    assert result.get(timeout=5) == "once"
    assert Execution.objects.filter(label="once").count() == 1


def test_a_failing_result_write_gives_the_message_back_to_run_again(
    broker_url, queue_name, monkeypatch
):
    result = record.delay("twice")
    real = DatabaseBackend.store

    def store(self: DatabaseBackend, message: TaskMessage, state: str, **kwargs: Any) -> None:
        if state == states.SUCCESS:
            failing(self, message, state, **kwargs)
        else:
            real(self, message, state, **kwargs)

    failing = Failing(real, ProgrammingError(MISSING))
    monkeypatch.setattr(DatabaseBackend, "store", store)
    _run_while_failing(queue_name, failing, calls=1)
    _on_the_queue(queue_name)
    assert Execution.objects.filter(label="twice").count() == 1  # it ran; its outcome did not stick
    assert AsyncResult(result.id).state == states.STARTED
    failing.on = False
    _run_until_done(queue_name, 1)
    assert result.get(timeout=5) == "twice"
    assert Execution.objects.filter(label="twice").count() == 2  # at least once: it ran again
    assert TaskResult.objects.get(task_id=result.id).delivery_count == 2


@pytest.mark.parametrize("write", ["letter", "result"])
def test_a_dead_letter_that_cannot_be_written_stays_on_the_queue(
    broker_url, queue_name, monkeypatch, write
):
    good = encode(TaskMessage(id="malformed-1", task=record.name, queue=queue_name))
    wire = WireMessage(headers=good.headers, body="{not json", content_type=good.content_type)
    get_broker().publish(wire, queue=queue_name)
    if write == "letter":  # the DeadLetter row
        failing = Failing(DeadLetter.objects.create, ProgrammingError(MISSING))
        monkeypatch.setattr(DeadLetter.objects, "create", failing)
    else:  # the DEAD result row written with it: the dead letter rolls back with it
        failing = Failing(DatabaseBackend.store, ProgrammingError(MISSING))
        monkeypatch.setattr(DatabaseBackend, "store", failing.method)
    _run_while_failing(queue_name, failing, calls=2)
    _on_the_queue(queue_name)
    assert not DeadLetter.objects.exists()  # not one per attempt
    failing.on = False
    _run_until(queue_name, DeadLetter.objects.exists)
    assert "malformed JSON" in DeadLetter.objects.get(task_id="malformed-1").reason
    assert AsyncResult("malformed-1").state == states.DEAD
    assert get_broker().depth(queue_name) == 0


@pytest.mark.timeout(120)
def test_a_worker_whose_result_table_went_away_loses_nothing(
    broker_url, queue_name, settings, start_worker
):
    # What was seen: a worker left running while its database was dropped under it kept
    # consuming, and its messages vanished with no result and no dead letter.
    settings.TQ = {**settings.TQ, "MAX_DELIVERIES": 2}
    results = [record.delay(f"r{i}") for i in range(3)]
    tables = [TaskResult._meta.db_table, DeadLetter._meta.db_table]
    _rename(tables, "_away")
    try:
        worker = start_worker("-P", "prefork", "-c", "1", "-l", "debug")
        # Each attempt fails (logged at debug level, with the table's name in the error) and
        # gives its message back; the old consumer dead-lettered it on the third delivery,
        # failed to, and acked it anyway.
        wait_for(lambda: worker.output().count(tables[0]) >= 8, 60, what="8 failed attempts logged")
    finally:
        _rename([f"{table}_away" for table in tables], "", strip="_away")
    for result in results:
        assert result.get(timeout=60).startswith("r")
    assert Execution.objects.count() == 3
    assert not DeadLetter.objects.exists()
    assert worker.process.poll() is None, worker.output()


def _rename(tables: list[str], suffix: str, *, strip: str = "") -> None:
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table in tables:
            new = table.removesuffix(strip) + suffix
            cursor.execute(f"ALTER TABLE {quote(table)} RENAME TO {quote(new)}")
