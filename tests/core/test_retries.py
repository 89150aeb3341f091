from __future__ import annotations

import pytest

from django_tq import AsyncResult, states
from django_tq.models import TaskResult
from django_tq.testing import capture
from tests.testapp.models import Execution
from tests.testapp.tasks import always_retries, flaky_until_third

pytestmark = pytest.mark.django_db


def test_retry_runs_max_retries_plus_one_times_then_fails_with_the_error():
    with capture() as queue:
        result = always_retries.delay()
    queue.run_all()
    assert Execution.objects.count() == 3  # max_retries=2: the first run and two retries
    assert AsyncResult(result.id).state == states.FAILURE
    with pytest.raises(ConnectionError, match="flaky"):
        result.get(timeout=1)
    assert TaskResult.objects.get(task_id=result.id).retries == 2


def test_autoretry_with_backoff_until_success():
    with capture() as queue:
        result = flaky_until_third.delay()
    queue.run_all()
    assert result.get(timeout=1) == 2
    attempts = [m for m in queue.messages if m.id == result.id]
    assert [m.retries for m in attempts] == [0, 1, 2]
    assert all(m.eta is not None for m in attempts[1:])  # backoff: 1 s, then 2 s after each failure
    assert list(Execution.objects.values_list("label", flat=True)) == ["try-0", "try-1", "try-2"]


@pytest.mark.db
def test_retry_state_is_recorded_between_attempts(settings):
    settings.TQ = {**settings.TQ, "ALWAYS_EAGER": False}
    with capture() as queue:
        result = always_retries.delay()
    first = queue.messages[0]
    from django_tq.execution import execute, record

    outcome = execute(first)
    assert outcome.state == states.RETRY and outcome.retry is not None
    record(first, outcome)
    assert (
        AsyncResult(result.id).state == states.QUEUED
    )  # RETRY, then QUEUED again for the next try
    assert TaskResult.objects.get(task_id=result.id).retries == 1
