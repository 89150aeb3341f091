"""``django_tq.backends.TQTaskBackend``: Django's ``django.tasks`` API on django_tq's worker.

The cases follow Django's own backend tests (``tests/tasks/`` in Django: enqueue, results,
failures, context, validation, signals), run through a real ``tqworker`` process: on Django 6
with ``django.tasks``, on Django 5.2 with the ``django-tasks`` backport.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.db import connections, transaction
from django.test import override_settings
from django.utils import timezone

from django_tq import AsyncResult, send_task, states
from django_tq.models import DeadLetter, ParkedMessage, QueueMessage, TaskResult
from tests.conftest import wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import add as tq_add

if not django_settings.HAS_DJANGO_TASKS:
    pytest.skip("neither django.tasks nor the django_tasks backport", allow_module_level=True)

from django_tq.backends import TQTaskBackend, compat, priority
from tests.djangotasks import signal_log
from tests.djangotasks import tasks as dj

Status = compat.TaskResultStatus
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.django_version]


@pytest.fixture
def queue(settings: Any, queue_name: str) -> str:
    """Django's ``"default"`` queue is TQ["DEFAULT_QUEUE"]: a queue of this test's own."""
    settings.TQ = {**settings.TQ, "BROKER_URL": "django://", "DEFAULT_QUEUE": queue_name}
    return queue_name


def run_async(awaitable: Any) -> Any:
    """Run ``awaitable`` on an event loop; close the database connections ``sync_to_async``'s
    thread opened meanwhile (they would outlive the test and keep the test database busy)."""

    async def scenario() -> Any:
        try:
            return await awaitable
        finally:
            await sync_to_async(connections.close_all)()

    return asyncio.run(scenario())


def finished(result: Any, timeout: float = 20.0) -> Any:
    """Refresh ``result`` until it is finished; return it."""

    def done() -> bool:
        result.refresh()
        return bool(result.is_finished)

    wait_for(done, timeout, what=f"{result.task.module_path} to finish")
    return result


# -- the backend and its flags -----------------------------------------------------------------
def test_the_backend_supports_everything_django_tasks_asks_about() -> None:
    backend = compat.task_backends["default"]
    assert isinstance(backend, TQTaskBackend)
    assert backend.alias == "default"
    assert backend.options == {}
    assert backend.supports_defer is True
    assert backend.supports_async_task is True
    assert backend.supports_get_result is True
    assert backend.supports_priority is True
    assert isinstance(dj.noop_task, compat.Task)
    assert isinstance(dj.noop_task_from_bare_decorator, compat.Task)


def test_priority_levels_round_trip_the_documented_table() -> None:
    table = {
        -100: 0, -81: 0, -80: 1, -61: 1, -60: 2, -41: 2, -40: 3, -21: 3, -20: 4, -1: 4,
        0: 5, 19: 5, 20: 6, 39: 6, 40: 7, 59: 7, 60: 8, 79: 8, 80: 9, 100: 9,
    }  # fmt: skip
    assert {value: priority.to_level(value) for value in table} == table
    assert [priority.to_priority(level) for level in range(10)] == list(range(-100, 100, 20))
    assert all(priority.to_level(priority.to_priority(level)) == level for level in range(10))


# -- enqueue and results, through a real worker ------------------------------------------------
def test_enqueue_runs_on_tqworker_and_get_result_reads_the_outcome(
    broker_url: str, start_worker: Any
) -> None:
    worker = start_worker("-P", "threads", "-c", "2", "-n", "dj-worker")
    for task, args, kwargs, value in [
        (dj.noop_task, (1,), {"two": 3}, None),
        (dj.noop_task_async, (), {}, None),
        (dj.calculate_meaning_of_life, (), {}, 42),
        (dj.add, (2,), {"y": 3}, 5),
        (dj.async_add, (2, 3), {}, 5),
        (dj.returns_tuple, (), {}, [1, 2]),  # JSON has no tuples, as in Django
    ]:
        result = task.enqueue(*args, **kwargs)
        assert result.status == Status.READY
        assert result.task == task
        assert result.args == list(args)
        assert result.kwargs == kwargs
        assert result.enqueued_at is not None
        with pytest.raises(ValueError, match="Task has not finished yet"):
            _ = result.return_value
        finished(result)
        assert result.status == Status.SUCCESSFUL
        assert result.return_value == value
        assert result.started_at >= result.enqueued_at
        assert result.finished_at >= result.started_at
        assert result.last_attempted_at == result.started_at
        assert result.attempts == 1
        assert result.worker_ids == ["dj-worker"]
        assert result.errors == []
        assert task.get_result(result.id) == result
        assert compat.task_backends["default"].get_result(result.id).return_value == value
        # the same task seen as a django_tq result (admin, REST, AsyncResult)
        assert AsyncResult(result.id).get(timeout=5) == value
        assert AsyncResult(result.id).name == task.module_path
    assert worker.stop() == 0, worker.output()


def test_aenqueue_aget_result_and_arefresh(queue: str, start_worker: Any) -> None:
    start_worker("-P", "solo")

    async def scenario() -> tuple[Any, Any]:
        result = await dj.calculate_meaning_of_life.aenqueue()
        for _ in range(400):
            await result.arefresh()
            if result.is_finished:
                break
            await asyncio.sleep(0.05)
        fetched = await dj.calculate_meaning_of_life.aget_result(result.id)
        return result, fetched

    result, fetched = run_async(scenario())
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 42
    assert fetched == result


def test_failures_are_failed_results_with_the_exception_and_the_worker_lives_on(
    queue: str, start_worker: Any
) -> None:
    worker = start_worker("-P", "solo")
    cases = [
        (dj.failing_task_value_error, ValueError, "This task failed due to ValueError"),
        (dj.failing_task_system_exit, SystemExit, "This task failed due to SystemExit"),
        (dj.exit_task, SystemExit, "1"),
        (dj.complex_return_value, TypeError, "Unsupported type"),
    ]
    for task, exception, message in cases:
        result = finished(task.enqueue())
        assert result.status == Status.FAILED, (task, result)
        with pytest.raises(ValueError, match="Task failed"):
            _ = result.return_value
        assert result.started_at is not None
        assert result.finished_at >= result.started_at
        assert len(result.errors) == 1
        assert result.errors[0].exception_class is exception
        assert message in result.errors[0].traceback
        assert result.attempts == 1
    value_error = dj.failing_task_value_error.get_result(
        finished(dj.failing_task_value_error.enqueue()).id
    )
    assert value_error.errors[0].traceback.endswith(
        "ValueError: This task failed due to ValueError\n"
    )
    complex_error = finished(dj.complex_exception.enqueue())
    assert complex_error.errors[0].exception_class is ValueError
    assert 'ValueError(ValueError("This task failed"))' in complex_error.errors[0].traceback
    # SystemExit failed the task; it did not end the worker
    assert finished(dj.add.enqueue(1, 1)).return_value == 2
    assert worker.process.poll() is None


def test_takes_context_gets_the_running_result_and_the_attempt(
    queue: str, start_worker: Any
) -> None:
    start_worker("-P", "threads", "-n", "ctx-worker")
    result = finished(dj.get_task_id.enqueue())
    assert result.return_value == result.id
    report = finished(dj.context_report.enqueue(label="hello")).return_value
    assert report["attempt"] == 1
    assert report["status"] == str(Status.RUNNING)
    assert report["backend"] == "default"
    assert report["worker_ids"] == ["ctx-worker"]
    assert report["kwargs"] == {"label": "hello"}
    assert report["started"] and report["enqueued"]
    assert Execution.objects.filter(task_id=report["id"], label="hello").exists()
    async_report = finished(dj.async_context_report.enqueue()).return_value
    assert async_report["attempt"] == 1
    assert AsyncResult(async_report["id"]).state == states.SUCCESS


@pytest.mark.db
def test_a_redelivery_after_a_worker_died_is_the_next_attempt(
    queue: str, settings: Any, start_worker: Any
) -> None:
    settings.TQ = {**settings.TQ, "LEASE_SECONDS": 2}
    first = start_worker("-P", "solo", "-n", "first")
    result = dj.hangs_on_first_attempt.enqueue()
    wait_for(lambda: Execution.objects.filter(task_id=result.id).exists(), what="attempt 1")
    assert dj.hangs_on_first_attempt.get_result(result.id).status == Status.RUNNING
    first.kill_tree()
    start_worker("-P", "solo", "-n", "second")
    finished(result, timeout=30)
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 2
    assert result.attempts == 2
    assert result.worker_ids == ["second", "second"]  # the latest attempt's worker only


def test_non_json_arguments_fail_at_enqueue_and_nothing_is_sent(queue: str) -> None:
    with pytest.raises(TypeError, match="Unsupported type"):
        dj.noop_task.enqueue(dt.datetime.now())
    with pytest.raises(TypeError, match="Unsupported type"):
        run_async(dj.noop_task.aenqueue(dt.datetime.now()))
    assert not TaskResult.objects.exists()
    assert not QueueMessage.objects.exists()


# -- priority, queues, run_after ---------------------------------------------------------------
@pytest.mark.db
def test_priority_orders_the_queue_and_reads_back(queue: str, start_worker: Any) -> None:
    low = dj.record.using(priority=-100).enqueue("low")
    default = dj.record.enqueue("default")
    high = dj.record.using(priority=90).enqueue("high")
    levels = dict(QueueMessage.objects.values_list("priority", "queue").order_by("priority"))
    assert set(levels) == {0, 5, 9} and set(levels.values()) == {queue}
    start_worker("-P", "solo", "--prefetch-multiplier", "1")
    for result in (low, default, high):
        finished(result)
    order = list(Execution.objects.order_by("id").values_list("label", flat=True))
    assert order == ["high", "default", "low"]
    assert dj.record.get_result(high.id).task.priority == 80  # level 9 reads back as 80
    assert dj.record.get_result(low.id).task.priority == -100
    assert dj.record.get_result(default.id).task.priority == 0
    assert TaskResult.objects.get(task_id=high.id).priority == 9


def test_queue_name_picks_the_queue_and_is_validated_against_queues(
    queue: str, start_worker: Any
) -> None:
    other = f"{queue}-other"
    result = dj.add.using(queue_name=other).enqueue(1, 2)
    assert QueueMessage.objects.get().queue == other
    start_worker("-P", "solo", "-Q", other)
    assert finished(result).return_value == 3
    assert dj.add.get_result(result.id).task.queue_name == other
    declared = dj.send_email.enqueue("a@example.com")  # @task(queue_name="emails")
    assert TaskResult.objects.get(task_id=declared.id).queue == "emails"
    with override_settings(
        TASKS={"default": {"BACKEND": "django_tq.backends.TQTaskBackend", "QUEUES": ["default"]}}
    ):
        with pytest.raises(compat.InvalidTask, match="Queue 'unknown' is not valid for backend"):
            dj.noop_task.using(queue_name="unknown").enqueue()
        assert dj.noop_task.enqueue().task.queue_name == "default"


def test_task_routes_route_django_tasks_on_the_default_queue(
    queue: str, settings: Any, start_worker: Any
) -> None:
    routed = f"{queue}-routed"
    settings.TQ = {**settings.TQ, "TASK_ROUTES": {"tests.djangotasks.tasks.add": {"queue": routed}}}
    result = dj.add.enqueue(2, 2)
    assert TaskResult.objects.get(task_id=result.id).queue == routed
    start_worker("-P", "solo", "-Q", routed)
    assert finished(result).return_value == 4


def test_run_after_defers_and_a_far_one_is_parked(
    queue: str, settings: Any, start_worker: Any
) -> None:
    settings.TQ = {**settings.TQ, "ETA_HORIZON_SECONDS": 1}
    start_worker("-P", "solo")
    soon = timezone.now() + dt.timedelta(seconds=3)
    result = dj.record.using(run_after=soon).enqueue("deferred")
    assert ParkedMessage.objects.filter(task_id=result.id).exists()  # beyond the horizon
    assert result.task.run_after == soon
    waiting = dj.record.get_result(result.id)
    assert waiting.status == Status.READY
    assert waiting.task.run_after == soon
    finished(result)
    ran_at = Execution.objects.get(label="deferred").created_at
    assert ran_at >= soon
    with pytest.raises(compat.InvalidTask, match="run_after must be an aware datetime"):
        dj.record.using(run_after=dt.datetime.now())


def test_a_second_backend_alias_is_kept_and_a_worker_without_it_still_runs_the_task(
    queue: str, start_worker: Any
) -> None:
    two = {
        "default": {"BACKEND": "django_tq.backends.TQTaskBackend", "QUEUES": []},
        "second": {"BACKEND": "django_tq.backends.TQTaskBackend", "QUEUES": []},
    }
    with override_settings(TASKS=two):
        result = dj.context_report.using(backend="second").enqueue(label="second")
        assert result.backend == "second"
        assert TaskResult.objects.get(task_id=result.id).task_name == dj.context_report.module_path
    worker = start_worker("-P", "solo")  # its TASKS has "default" only
    AsyncResult(result.id).get(timeout=20)
    report = dj.context_report.get_result(result.id).return_value  # read through "default"
    assert report["backend"] == "second"  # what the context saw: the alias it was sent through
    assert "TASKS has no backend 'second' in this process" in worker.output()


# -- get_result ----------------------------------------------------------------------------------
@pytest.mark.db
def test_get_result_of_unknown_mismatched_and_django_tq_ids(queue: str) -> None:
    backend = compat.task_backends["default"]
    with pytest.raises(compat.TaskResultDoesNotExist):
        dj.noop_task.get_result("123")
    with pytest.raises(compat.TaskResultDoesNotExist):
        run_async(dj.noop_task.aget_result("123"))
    result = dj.noop_task_async.enqueue()
    mismatch = compat.TaskResultMismatch
    with pytest.raises(mismatch, match="Task does not match"):
        dj.noop_task.get_result(result.id)
    with pytest.raises(mismatch, match="Task does not match"):
        run_async(dj.noop_task.aget_result(result.id))
    ours = tq_add.delay(1, 2)
    with pytest.raises(compat.TaskResultDoesNotExist, match=r"not of a django\.tasks Task"):
        backend.get_result(ours.id)
    queued = backend.get_result(result.id)
    assert queued.status == Status.READY
    assert queued.attempts == 0 and queued.worker_ids == []
    assert queued.started_at is None and queued.finished_at is None


# -- signals -------------------------------------------------------------------------------------
@pytest.fixture
def django_signal_log(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    path = tmp_path / "django-signals.jsonl"
    monkeypatch.setenv(signal_log.ENV, str(path))
    signal_log.connect()
    yield path
    signal_log.disconnect()


def test_django_task_signals_enqueued_here_started_and_finished_in_the_worker(
    queue: str, start_worker: Any, django_signal_log: Any
) -> None:
    worker = start_worker("-P", "solo", "-n", "signals")
    good = finished(dj.add.enqueue(1, 2))
    bad = finished(dj.failing_task_value_error.enqueue())
    wait_for(
        lambda: [line["id"] for line in signal_log.read(django_signal_log)].count(bad.id) == 3,
        what="the failed task's three signals",
    )
    lines = signal_log.read(django_signal_log)
    by_task = {
        task_id: [(line["signal"], line["status"]) for line in lines if line["id"] == task_id]
        for task_id in (good.id, bad.id)
    }
    assert by_task[good.id] == [
        ("task_enqueued", str(Status.READY)),
        ("task_started", str(Status.RUNNING)),
        ("task_finished", str(Status.SUCCESSFUL)),
    ]
    assert by_task[bad.id][-1] == ("task_finished", str(Status.FAILED))
    pids = {line["signal"]: line["pid"] for line in lines if line["id"] == good.id}
    assert pids["task_enqueued"] == os.getpid()  # in the caller
    assert pids["task_started"] == pids["task_finished"] == worker.pid  # in the worker (solo)
    final = next(
        line for line in lines if line["id"] == good.id and line["signal"] == "task_finished"
    )
    assert final["sender"] == "TQTaskBackend"
    assert final["return_value"] == 3
    assert final["attempts"] == 1 and final["worker_ids"] == ["signals"]
    failed = next(
        line for line in lines if line["id"] == bad.id and line["signal"] == "task_finished"
    )
    assert failed["errors"] == ["builtins.ValueError"]


@pytest.mark.db
def test_enqueue_in_a_transaction_is_sent_at_commit_and_never_after_a_rollback(
    queue: str, start_worker: Any, django_signal_log: Any
) -> None:
    with transaction.atomic():
        kept = dj.record.enqueue("committed")
        assert not signal_log.read(django_signal_log)  # enqueued only once it is committed
    assert [line["signal"] for line in signal_log.read(django_signal_log)] == ["task_enqueued"]
    with pytest.raises(RuntimeError), transaction.atomic():
        dropped = dj.record.enqueue("rolled back")
        raise RuntimeError("roll back")
    assert len(signal_log.read(django_signal_log)) == 1
    start_worker("-P", "solo")
    finished(kept)
    assert not TaskResult.objects.filter(task_id=dropped.id).exists()
    assert list(Execution.objects.values_list("label", flat=True)) == ["committed"]


# -- security ------------------------------------------------------------------------------------
def test_a_message_naming_a_plain_function_or_any_path_is_dead_lettered_never_run(
    queue: str, start_worker: Any
) -> None:
    start_worker("-P", "solo")
    plain = send_task("tests.djangotasks.tasks.plain_function", ["never"])
    system = send_task("os.system", ["touch /tmp/never"])
    for result in (plain, system):
        wait_for(lambda r=result: AsyncResult(r.id).state == states.DEAD, what="a dead letter")
    reasons = set(DeadLetter.objects.values_list("reason", flat=True))
    assert all(reason.startswith("unknown task") for reason in reasons), reasons
    assert not Execution.objects.filter(task_id="plain").exists()
    assert finished(dj.add.enqueue(1, 1)).return_value == 2  # django.tasks Tasks still run


# -- admin and REST ------------------------------------------------------------------------------
def test_django_tasks_results_show_in_the_admin_and_the_rest_api(
    queue: str, settings: Any, start_worker: Any, admin_client: Any
) -> None:
    settings.TQ = {**settings.TQ, "API_ENQUEUE_ALLOWLIST": [dj.add.module_path]}
    start_worker("-P", "solo")
    result = finished(dj.add.enqueue(20, 22))
    page = admin_client.get("/admin/django_tq/taskresult/", {"q": result.id})
    assert page.status_code == 200
    assert dj.add.module_path in page.content.decode()
    detail = admin_client.get(f"/api/tq/results/{result.id}/")
    assert detail.status_code == 200, detail.content
    body = detail.json()
    assert body["task_name"] == dj.add.module_path
    assert body["state"] == states.SUCCESS
    assert body["result"] == 42
    names = [entry["name"] for entry in admin_client.get("/api/tq/tasks/").json()]
    assert dj.add.module_path in names
    sent = admin_client.post(
        f"/api/tq/tasks/{dj.add.module_path}/enqueue/",
        {"args": [1], "kwargs": {"y": 2}},
        content_type="application/json",
    )
    assert sent.status_code == 202, sent.content
    AsyncResult(sent.json()["task_id"]).get(timeout=20)
    over_rest = dj.add.get_result(sent.json()["task_id"])  # a TaskResult like any other
    assert over_rest.status == Status.SUCCESSFUL and over_rest.return_value == 3


# -- eager mode (ALWAYS_EAGER): like Django's ImmediateBackend -----------------------------------
def test_always_eager_runs_at_enqueue_with_signals_in_order(
    queue: str, settings: Any, django_signal_log: Any
) -> None:
    settings.TQ = {**settings.TQ, "ALWAYS_EAGER": True, "EAGER_PROPAGATES": False}
    result = dj.context_report.enqueue(label="eager")
    assert result.status == Status.SUCCESSFUL
    assert result.return_value["attempt"] == 1
    assert result.attempts == 1
    failed = dj.failing_task_value_error.enqueue()
    assert failed.status == Status.FAILED
    assert failed.errors[0].exception_class is ValueError
    signals = [(line["signal"], line["status"]) for line in signal_log.read(django_signal_log)]
    assert signals[:3] == [
        ("task_enqueued", str(Status.READY)),
        ("task_started", str(Status.RUNNING)),
        ("task_finished", str(Status.SUCCESSFUL)),
    ]
    assert signals[-1] == ("task_finished", str(Status.FAILED))


def test_a_backend_with_options_fails_its_check() -> None:
    backend = TQTaskBackend("extra", {"OPTIONS": {"url": "x"}})
    messages = list(backend.check())
    assert [message.id for message in messages] == ["tq.E005"]
    assert "url" in messages[0].msg


def test_worker_stops_cleanly_on_sigterm_with_django_tasks_running(
    queue: str, start_worker: Any
) -> None:
    worker = start_worker("-P", "prefork", "-c", "2")
    results = [dj.record.enqueue(f"p{i}") for i in range(10)]
    for result in results:
        finished(result)
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(20) == 0, worker.output()
    assert Execution.objects.filter(label__startswith="p").count() == 10
