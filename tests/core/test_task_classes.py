from __future__ import annotations

from typing import Any

import pytest

from django_tq import Task, states, task
from django_tq.registry import registry
from django_tq.testing import capture

calls: list[tuple[str, Any]] = []


class Audited(Task[Any, Any]):
    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        calls.append(("before_start", args))

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        calls.append(("on_success", retval))

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: str
    ) -> None:
        calls.append(("on_failure", type(exc).__name__))

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: str
    ) -> None:
        calls.append(("after_return", status))


@pytest.fixture
def audited_tasks():
    calls.clear()

    @task(base=Audited, name="audited.double")
    def double(x: int) -> int:
        return x * 2

    @task(base=Audited, name="audited.explode")
    def explode() -> None:
        raise KeyError("gone")

    yield double, explode
    registry.unregister("audited.double")
    registry.unregister("audited.explode")


@pytest.mark.django_db
def test_base_class_handlers_run_around_the_task(audited_tasks):
    double, explode = audited_tasks
    assert isinstance(double, Audited)
    with capture() as queue:
        double.delay(21)
        explode.delay()
    outcomes = queue.run_all()
    assert calls == [
        ("before_start", (21,)),
        ("on_success", 42),
        ("after_return", states.SUCCESS),
        ("before_start", ()),
        ("on_failure", "KeyError"),
        ("after_return", states.FAILURE),
    ]
    assert sorted(o.state for o in outcomes.values()) == [states.FAILURE, states.SUCCESS]


@pytest.mark.django_db
def test_a_failing_handler_never_breaks_the_task(audited_tasks):
    double, _ = audited_tasks

    def broken(*args: Any) -> None:
        raise RuntimeError("handler bug")

    double.on_success = broken  # type: ignore[method-assign]
    with capture() as queue:
        result = double.delay(2)
    queue.run_all()
    assert result.get(timeout=1) == 4


def test_amqp_publishes_with_confirms():
    from tests.conftest import AMQP_URL, require_service

    require_service("RabbitMQ", 5672)
    from django_tq.broker import Broker

    broker = Broker(AMQP_URL)
    assert broker.confirms_publish is True  # our own confirm rounds (broker/confirms.py)
    assert Broker(AMQP_URL, transport_options={"confirm_publish": False}).confirms_publish is False


@pytest.mark.django_db
def test_update_state_records_a_custom_state_visible_through_info():
    from django_tq import AsyncResult
    from tests.testapp.tasks import reports_progress

    with capture() as queue:
        result = reports_progress.delay()
    queue.run_all()
    assert result.get(timeout=1) == ["PROGRESS", {"done": 1, "total": 2}]
    assert AsyncResult(result.id).state == states.SUCCESS
    with pytest.raises(RuntimeError, match="outside a task"):
        reports_progress.update_state(state="PROGRESS")
