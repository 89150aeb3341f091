"""``revoke(terminate=True)`` stops a running task, with the signal's meaning, on every pool.

Through real workers: prefork with each accepted signal on every transport, the threads and solo
pools, an ``async def`` task, the admin action and the REST endpoint; and ``self.is_aborted()``,
the cooperative way for a long loop to notice a revocation.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from django_tq import AsyncResult, abort, control, serialization, states
from django_tq.broker import get_broker
from django_tq.conf import tq_settings
from django_tq.exceptions import TaskRevokedError, Terminated
from django_tq.models import QueueMessage, Revocation, TaskResult
from tests.conftest import WorkerProcess, wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import (
    async_runs_until_stopped,
    polls_is_aborted,
    record,
    runs_until_stopped,
)

pytestmark = pytest.mark.django_db(transaction=True)

#: how long the tasks would run if nothing stopped them (a test that waits this long has failed)
LONG = 25


def labels(result: AsyncResult[Any]) -> list[str]:
    """Return the rows the task wrote, in order."""
    rows = Execution.objects.filter(task_id=result.id).order_by("id")
    return [label.split(":")[0] for label in rows.values_list("label", flat=True)]


def wait_started(result: AsyncResult[Any]) -> int:
    """Wait until the task wrote its start row; return the pid of the process running it."""
    row = wait_for(
        lambda: Execution.objects.filter(task_id=result.id, label__startswith="start:").first(),
        what="the task to start",
    )
    return int(row.pid)


def assert_revoked(result: AsyncResult[Any], signal_name: str | None) -> None:
    """The task ended REVOKED, with TaskRevokedError stored and raised by ``get()``."""
    wait_for(lambda: AsyncResult(result.id).state == states.REVOKED, timeout=15, what="REVOKED")
    with pytest.raises(TaskRevokedError) as raised:
        AsyncResult(result.id).get(timeout=5)
    stored = TaskResult.objects.get(task_id=result.id).result
    assert serialization.is_exception_data(stored), stored
    if signal_name is not None:
        assert signal_name in str(raised.value)


def terminated(
    task: Any, label: str, signal_name: str = "SIGTERM", **kwargs: Any
) -> tuple[AsyncResult[Any], int]:
    """Start ``task``, terminate it with ``signal_name`` once it runs, wait until it is REVOKED.

    Return its result and the pid of the process that ran it.
    """
    result = task.delay(LONG, label, **kwargs)
    pid = wait_started(result)
    result.revoke(terminate=True, signal=signal_name)
    assert_revoked(result, signal_name)
    return result, pid


def next_task_pid(worker: WorkerProcess) -> int:
    """Run one more task on the worker; return the pid that ran it (the worker goes on)."""
    after = record.delay("after")
    assert after.get(timeout=20) == "after"
    return int(Execution.objects.get(task_id=after.id).pid)


def assert_nothing_left(broker_url: str, worker: WorkerProcess) -> None:
    """Once the worker stopped, no message is waiting or leased: the task's message was acked."""
    assert worker.stop() == 0
    if broker_url == "django://":
        assert not QueueMessage.objects.exists()
    else:
        assert get_broker().depth(tq_settings.DEFAULT_QUEUE) == 0


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT", "SIGUSR1", "SIGKILL"])
def test_prefork_terminate_stops_the_task_with_the_signal_meaning(
    signal_name: str, broker_url: str, start_worker: Any
) -> None:
    worker = start_worker("-P", "prefork", "-c", "1")
    result, child = terminated(runs_until_stopped, "doomed", signal_name)
    if signal_name == "SIGKILL":  # nothing runs in the task; a new child takes the dead one's place
        assert labels(result) == ["start"]
        assert next_task_pid(worker) != child
    else:  # raised inside the task: it cleans up, and the same child goes on
        expected = (
            ["start", "soft", "finally"] if signal_name == "SIGUSR1" else ["start", "finally"]
        )
        assert labels(result) == expected
        assert next_task_pid(worker) == child
    output = worker.output()
    assert output.count("Terminating revoked task") == 1, output  # signalled once, not per tick
    if broker_url != "amqp://guest:guest@127.0.0.1:5672//":
        # leased transports: the message was acked, never given back for another worker to skip
        assert "Skipped revoked task" not in output
    assert_nothing_left(broker_url, worker)
    assert labels(result).count("start") == 1  # never run again


def test_terminate_is_not_swallowed_by_except_exception(start_worker: Any) -> None:
    worker = start_worker("-P", "prefork", "-c", "1")
    result, _ = terminated(runs_until_stopped, "careless", swallow="exceptions")
    assert labels(result) == ["start", "finally"]
    assert next_task_pid(worker)


def test_a_task_that_swallows_terminate_can_then_be_killed(start_worker: Any) -> None:
    worker = start_worker("-P", "prefork", "-c", "1")
    result = runs_until_stopped.delay(LONG, "stubborn", swallow="everything")
    child = wait_started(result)
    result.revoke(terminate=True)
    wait_for(lambda: "swallowed" in labels(result), what="the task to swallow Terminated")
    assert AsyncResult(result.id).state == states.STARTED  # it goes on: nothing more is sent
    result.revoke(terminate=True, signal="SIGKILL")  # a new request: the parent sends it too
    assert_revoked(result, "SIGKILL")
    assert labels(result) == ["start", "swallowed"]
    assert next_task_pid(worker) != child
    assert worker.output().count("Terminating revoked task") == 2  # once per signal


def test_a_group_wide_sigterm_is_still_a_warm_shutdown(start_worker: Any) -> None:
    """SIGTERM to the whole process group (systemd, Ctrl-C's SIGINT): running tasks finish."""
    worker = start_worker("-P", "prefork", "-c", "1")
    result = runs_until_stopped.delay(1.5, "finishes")
    wait_started(result)
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.process.wait(30) == 0
    assert AsyncResult(result.id).state == states.SUCCESS
    assert labels(result) == ["start", "finally", "end"]


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_in_process_pools_raise_at_the_next_checkpoint(
    pool: str, broker_url: str, start_worker: Any
) -> None:
    worker = start_worker("-P", pool, "-c", "1")
    result, pid = terminated(runs_until_stopped, "doomed")
    assert labels(result) == ["start", "finally"]
    assert next_task_pid(worker) == pid == worker.pid
    assert worker.output().count("Terminating revoked task") == 1
    assert_nothing_left(broker_url, worker)


@pytest.mark.parametrize(
    ("signal_name", "expected"),
    [("SIGUSR1", ["start", "soft", "finally"]), ("SIGKILL", ["start", "finally"])],
)
def test_threads_pool_gives_each_signal_its_in_process_meaning(
    signal_name: str, expected: list[str], start_worker: Any
) -> None:
    """SIGUSR1 raises SoftTimeLimitExceeded; SIGKILL cannot kill a thread, so it raises too."""
    worker = start_worker("-P", "threads", "-c", "2")
    result, _ = terminated(runs_until_stopped, "doomed", signal_name)
    assert labels(result) == expected
    assert next_task_pid(worker) == worker.pid  # the worker process lives on


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_terminate_cancels_an_async_task(pool: str, start_worker: Any) -> None:
    worker = start_worker("-P", pool, "-c", "1")
    result, pid = terminated(async_runs_until_stopped, "doomed")
    assert labels(result) == ["start", "cancelled"]
    assert next_task_pid(worker) == pid


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_is_aborted_lets_a_loop_stop_when_the_task_is_revoked(
    pool: str, broker_url: str, start_worker: Any
) -> None:
    worker = start_worker("-P", pool, "-c", "1")
    result = polls_is_aborted.delay(LONG, "polite")
    wait_started(result)
    result.revoke()  # no terminate: only the task's own polling stops it
    assert_revoked(result, None)
    assert labels(result) == ["start", "aborted"]
    assert "Terminating revoked task" not in worker.output()
    assert_nothing_left(broker_url, worker)


def test_is_aborted_in_an_async_task(start_worker: Any) -> None:
    start_worker("-P", "prefork", "-c", "1")
    result = async_runs_until_stopped.delay(LONG, "poll")
    wait_started(result)
    result.revoke()
    assert_revoked(result, None)
    assert labels(result) == ["start", "aborted"]


def test_is_aborted_is_false_for_a_task_nobody_revoked(start_worker: Any) -> None:
    start_worker("-P", "prefork", "-c", "1")
    result = polls_is_aborted.delay(0.3, "kept")
    assert result.get(timeout=20) == "finished"
    assert labels(result) == ["start", "end"]


def test_is_aborted_in_eager_mode_reads_the_revocation() -> None:
    control.revoke("eager-revoked")
    eager = polls_is_aborted.apply((LONG, "eager"), task_id="eager-revoked")
    assert eager.state == states.REVOKED
    with pytest.raises(TaskRevokedError):
        eager.get()
    kept = polls_is_aborted.apply((0.1, "eager-kept"))
    assert kept.get() == "finished"
    assert polls_is_aborted.is_aborted() is False  # outside an execution


def by_admin_action(client: Any, result: AsyncResult[Any]) -> None:
    pk = TaskResult.objects.get(task_id=result.id).pk
    response = client.post(
        "/admin/django_tq/taskresult/",
        {"action": "terminate_tasks", "_selected_action": [str(pk)]},
        follow=True,
    )
    assert response.status_code == 200


def by_rest(client: Any, result: AsyncResult[Any]) -> None:
    response = client.post(
        f"/api/tq/results/{result.id}/revoke/", {"terminate": True}, content_type="application/json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["state"] == states.STARTED  # running: the worker stops it


@pytest.mark.django_version
@pytest.mark.parametrize("terminate", [by_admin_action, by_rest], ids=["admin", "rest"])
def test_the_admin_action_and_the_rest_endpoint_stop_a_running_task(
    terminate: Any, admin_client: Any, start_worker: Any
) -> None:
    start_worker("-P", "prefork", "-c", "1")
    result = runs_until_stopped.delay(LONG, "remote")
    wait_started(result)
    terminate(admin_client, result)
    assert_revoked(result, "SIGTERM")
    assert labels(result) == ["start", "finally"]
    revocation = Revocation.objects.get(task_id=result.id)
    assert (revocation.terminate, revocation.signal) == (True, "SIGTERM")


def test_revoke_refuses_a_signal_terminate_does_not_accept() -> None:
    with pytest.raises(ValueError, match="SIGTERM, SIGINT, SIGUSR1, SIGKILL"):
        control.revoke("some-id", terminate=True, signal="SIGSTOP")
    with pytest.raises(ValueError):
        control.revoke("some-id", terminate=True, signal="NOPE")
    assert not Revocation.objects.exists()
    control.revoke("some-id", terminate=True, signal="kill")  # Celery's spellings are accepted
    assert Revocation.objects.get(task_id="some-id").signal == "SIGKILL"


def test_a_terminate_asked_before_the_execution_begins_is_raised_as_it_begins() -> None:
    abort.terminate("early", "SIGTERM")  # e.g. while the worker records STARTED
    with pytest.raises(Terminated), abort.Abort("early"):
        pytest.fail("the task's code must not run")
    assert abort.is_aborted("early") is False  # no Revocation row, and nothing left running


def test_terminating_a_task_goes_through_a_task_it_runs_eagerly(settings: Any) -> None:
    """The inner (eager) execution did not ask for the exception: it lets it reach the outer,
    even when eager failures do not propagate."""
    settings.TQ = {**settings.TQ, "EAGER_PROPAGATES": False}

    def terminate_when_inner_runs() -> None:
        wait_for(lambda: Execution.objects.filter(label="start:inner").exists(), what="inner")
        abort.terminate("outer", "SIGTERM")

    helper = threading.Thread(target=terminate_when_inner_runs)
    helper.start()
    with pytest.raises(Terminated), abort.Abort("outer") as outer:
        runs_until_stopped.apply((LONG, "inner"))
    helper.join()
    assert outer.terminated
    inner = Execution.objects.filter(label__endswith=":inner").order_by("id")
    assert [row.label for row in inner] == ["start:inner", "finally:inner"]
