"""Celery's task-API corners: ``Task.AsyncResult(id)``, ``max_retries=None`` (for ever),
``self.request.delivery_info``, ``shadow=``, ``add_to_parent``."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from django_tq import AsyncResult, Task, get_task_logger, states, task
from django_tq.execution import execute
from django_tq.message import round_trip
from django_tq.models import TaskResult
from django_tq.tasks import FROM_SETTINGS
from django_tq.testing import CapturedQueue
from django_tq.worker.embedded import EmbeddedWorker
from tests.conftest import wait_for
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db


@task(bind=True, max_retries=None, default_retry_delay=0)
def retries_for_ever(self: Any, succeed_at: int) -> int:
    if self.request.retries < succeed_at:
        raise self.retry(exc=ConnectionError("not yet"))
    return self.request.retries


@task(bind=True, default_retry_delay=0)
def retries_as_settings_say(self: Any, succeed_at: int) -> int:
    if self.request.retries < succeed_at:
        raise self.retry(exc=ConnectionError("not yet"))
    return self.request.retries


@task(bind=True, autoretry_for=(ConnectionError,), max_retries=None, default_retry_delay=0)
def autoretries_for_ever(self: Any, succeed_at: int) -> int:
    if self.request.retries < succeed_at:
        raise ConnectionError("not yet")
    return self.request.retries


def test_task_async_result_is_the_handle_of_an_id(tq_capture: CapturedQueue) -> None:
    sent = add.delay(1, 2)
    handle = add.AsyncResult(sent.id)
    assert handle == sent and handle.task_name == add.name
    assert handle.state == states.QUEUED
    tq_capture.run_all()
    assert add.AsyncResult(sent.id).get(timeout=1) == 3


def test_max_retries_none_retries_for_ever(settings: Any, tq_capture: CapturedQueue) -> None:
    settings.TQ = {**settings.TQ, "MAX_RETRIES": 3}
    assert retries_for_ever.max_retries is None and retries_for_ever.resolved_max_retries() is None
    result = retries_for_ever.delay(6)  # beyond the settings' 3
    tq_capture.run_all()
    assert result.get(timeout=1) == 6


def test_max_retries_not_given_uses_the_settings(settings: Any, tq_capture: CapturedQueue) -> None:
    settings.TQ = {**settings.TQ, "MAX_RETRIES": 3}
    assert retries_as_settings_say.max_retries is FROM_SETTINGS
    assert retries_as_settings_say.resolved_max_retries() == 3
    result = retries_as_settings_say.delay(6)
    tq_capture.run_all()
    assert AsyncResult(result.id).state == states.FAILURE
    assert AsyncResult(result.id).retries == 3
    settings.TQ = {**settings.TQ, "MAX_RETRIES": None}  # None in settings: no limit either
    assert retries_as_settings_say.resolved_max_retries() is None


def test_autoretry_with_max_retries_none_has_no_limit(
    settings: Any, tq_capture: CapturedQueue
) -> None:
    settings.TQ = {**settings.TQ, "MAX_RETRIES": 0}
    result = autoretries_for_ever.delay(5)
    tq_capture.run_all()
    assert result.get(timeout=1) == 5


@task(bind=True)
def delivery_info(self: Any) -> dict[str, Any]:
    return dict(self.request.delivery_info)


def test_request_delivery_info_in_celerys_shape(tq_capture: CapturedQueue) -> None:
    result = delivery_info.apply_async(queue="other", priority=7)
    tq_capture.run_all()
    assert result.get(timeout=1) == {
        "exchange": "",
        "routing_key": "other",
        "queue": "other",
        "priority": 7,
        "redelivered": False,
    }


def test_request_delivery_info_says_redelivered(tq_capture: CapturedQueue) -> None:
    delivery_info.delay()
    (message,) = tq_capture.messages
    outcome = execute(round_trip(message), delivery_count=2)
    assert outcome.result["redelivered"] is True
    assert outcome.result["queue"] == message.queue and outcome.result["priority"] is None


def test_delivery_info_in_a_real_worker(tq_worker: EmbeddedWorker) -> None:
    result = delivery_info.apply_async(priority=3)
    info = result.get(timeout=10)
    assert info["priority"] == 3 and info["redelivered"] is False
    assert info["queue"] == info["routing_key"] == result.queue


logger = get_task_logger(__name__)


@task(bind=True)
def logs_its_name(self: Any) -> str:
    logger.info("running")
    return str(self.request.shadow)


@task
def fails_loudly() -> None:
    raise ValueError("boom")


class ShadowedByArgument(Task[..., Any]):
    def shadow_name(self, args: Any, kwargs: Any, options: dict[str, Any]) -> str | None:
        return f"report-{args[0]}"


@task(base=ShadowedByArgument)
def report(number: int) -> int:
    return number


def test_shadow_names_the_task_in_logs_and_the_result_keeps_its_name(
    caplog: pytest.LogCaptureFixture, tq_capture: CapturedQueue
) -> None:
    result = logs_its_name.apply_async(shadow="nightly-report")
    (message,) = tq_capture.assert_enqueued(logs_its_name)
    assert message.shadow == "nightly-report" and message.task == logs_its_name.name
    with caplog.at_level(logging.INFO, logger=__name__):
        tq_capture.run_all()
    (record,) = [r for r in caplog.records if r.name == __name__]
    assert record.getMessage() == f"nightly-report[{result.id}]: running"
    assert record.__dict__["task_name"] == "nightly-report"
    assert result.get(timeout=1) == "nightly-report"  # self.request.shadow
    assert TaskResult.objects.get(task_id=result.id).task_name == logs_its_name.name
    assert AsyncResult(result.id).name == logs_its_name.name


def test_shadow_name_hook_of_a_task_class(tq_capture: CapturedQueue) -> None:
    report.delay(7)
    report.apply_async((8,), shadow="given")  # the option wins
    assert [m.shadow for m in tq_capture.messages] == ["report-7", "given"]


def test_a_worker_logs_the_shadow_name(
    caplog: pytest.LogCaptureFixture, tq_worker: EmbeddedWorker
) -> None:
    result = fails_loudly.apply_async(shadow="loud-one")
    with caplog.at_level(logging.WARNING, logger="django_tq"), pytest.raises(ValueError):
        result.get(timeout=10)
    wait_for(lambda: any(f"loud-one[{result.id}] failed" in r.getMessage() for r in caplog.records))
    assert TaskResult.objects.get(task_id=result.id).task_name == fails_loudly.name


@task(bind=True)
def starts_two(self: Any) -> list[str]:
    child = add.delay(1, 1)
    detached = add.apply_async((2, 2), add_to_parent=False)
    detached_chain = (add.s(3, 3) | add.s(1)).apply_async(add_to_parent=False)
    return [child.id, detached.id, detached_chain.id]


def test_add_to_parent_false_does_not_make_a_child(tq_capture: CapturedQueue) -> None:
    result = starts_two.delay()
    tq_capture.run_all()
    child, detached, detached_chain = result.get(timeout=1)
    assert [c.id for c in result.children] == [child]
    messages = {m.id: m for m in tq_capture.messages}
    assert (messages[child].parent_id, messages[child].root_id) == (result.id, result.id)
    assert messages[detached].parent_id is None and messages[detached].root_id == detached
    assert AsyncResult(detached_chain).get(timeout=1) == 7
    first = AsyncResult(detached_chain).parent
    assert first is not None and messages[first.id].parent_id is None
    assert messages[first.id].root_id == first.id
