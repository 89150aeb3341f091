"""Rate and time limits changed while workers run (tqcontrol rate_limit / time_limit), and the
worker's own --time-limit / --soft-time-limit."""

from __future__ import annotations

import time

import pytest
from django.core.management.base import CommandError

from django_tq import control, overrides, states
from django_tq.models import TaskResult
from tests.conftest import command_output
from tests.testapp.models import Execution
from tests.testapp.tasks import record, slow_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]
RECORD = "tests.testapp.tasks.record"
SLOW = "tests.testapp.tasks.slow_record"


def test_overrides_are_read_changed_and_reset():
    seen = overrides.Overrides(interval=0)
    control.rate_limit(RECORD, "10/m")
    control.time_limit(SLOW, 5, 2)
    seen.refresh(1)
    assert seen.rate(RECORD, None).interval == pytest.approx(6.0)
    assert seen.time_limits[SLOW] == (5, 2)
    control.rate_limit(RECORD, None)
    control.time_limit(SLOW, None)
    seen.refresh(2)
    assert seen.rate(RECORD, None) is None and SLOW not in seen.time_limits


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: control.rate_limit(RECORD, "lots"), "rate"),
        (lambda: control.time_limit(SLOW, -1), "positive"),
        (lambda: control.time_limit(SLOW, 1, 5), "must not exceed"),
    ],
)
def test_bad_limits_are_refused(call, error):
    with pytest.raises(ValueError, match=error):
        call()


def test_tqcontrol_refuses_bad_arguments():
    with pytest.raises(CommandError, match="TASK RATE"):
        command_output("tqcontrol", "rate_limit", RECORD)
    with pytest.raises(CommandError):
        command_output("tqcontrol", "rate_limit", RECORD, "fast")
    with pytest.raises(CommandError, match="seconds"):
        command_output("tqcontrol", "time_limit", SLOW, "soon")


def _starts(label_prefix: str) -> list[float]:
    rows = Execution.objects.filter(label__startswith=label_prefix).order_by("created_at")
    return [row.created_at.timestamp() for row in rows]


def test_a_rate_limit_set_live_spaces_the_starts_and_reset_lifts_it(
    queue_name, settings, start_worker
):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    start_worker("-P", "prefork", "-c", "2")
    assert "every worker applies it" in command_output("tqcontrol", "rate_limit", RECORD, "2/s")
    time.sleep(1.5)  # every consumer re-reads the overrides within a second
    results = [record.delay(f"limited{i}") for i in range(5)]
    assert [r.get(timeout=30) for r in results] == [f"limited{i}" for i in range(5)]
    starts = _starts("limited")
    assert starts[-1] - starts[0] >= 1.5  # 5 starts at 2/s: at least 4 intervals of 0.5 s
    command_output("tqcontrol", "rate_limit", RECORD, "reset")

    time.sleep(1.5)  # every consumer re-reads the overrides within a second
    results = [record.delay(f"free{i}") for i in range(5)]
    assert [r.get(timeout=30) for r in results] == [f"free{i}" for i in range(5)]
    starts = _starts("free")
    assert starts[-1] - starts[0] < 1.5


def test_a_time_limit_set_live_stops_a_long_task(queue_name, settings, start_worker):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    start_worker("-P", "prefork", "-c", "1")
    command_output("tqcontrol", "time_limit", SLOW, "1")

    time.sleep(1.5)
    result = slow_record.delay(10, "too long")
    with pytest.raises(Exception, match=r"[Tt]ime limit"):
        result.get(timeout=30)
    assert TaskResult.objects.get(task_id=result.id).state == states.FAILURE


def test_the_worker_time_limit_applies_to_tasks_that_set_none(queue_name, settings, start_worker):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    start_worker("-P", "prefork", "-c", "1", "--time-limit", "1")
    result = slow_record.delay(10, "unbounded")
    with pytest.raises(Exception, match=r"[Tt]ime limit"):
        result.get(timeout=30)
    assert slow_record.delay(0, "quick").get(timeout=20) == "quick"
