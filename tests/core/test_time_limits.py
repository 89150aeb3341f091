"""Soft limits raise inside the task; hard limits kill the child; neither loses the worker."""

from __future__ import annotations

import time

import pytest

from django_tq import AsyncResult, states
from django_tq.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from tests.conftest import wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import add, cleans_up_at_soft_limit, ignores_its_limit, slow_record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_soft_time_limit_raises_inside_the_task(start_worker, pool):
    start_worker("-P", pool, "-c", "1")
    started = time.monotonic()
    result = cleans_up_at_soft_limit.delay(30)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=20)
    assert time.monotonic() - started < 15
    assert Execution.objects.filter(label="soft:cleanup").count() == 1  # the task could clean up
    assert add.delay(1, 2).get(timeout=20) == 3


def test_soft_time_limit_per_call_and_from_settings(settings, start_worker):
    settings.TQ = {**settings.TQ, "TASK_SOFT_TIME_LIMIT": 1}
    start_worker("-P", "prefork", "-c", "1")
    from_settings = slow_record.delay(30, "settings")
    per_call = slow_record.apply_async((30, "call"), soft_time_limit=0.5)
    for result in (from_settings, per_call):
        with pytest.raises(SoftTimeLimitExceeded):
            result.get(timeout=20)
    assert not Execution.objects.filter(label__startswith="end:").exists()


def test_hard_time_limit_kills_the_child_and_the_task_fails_once(start_worker):
    worker = start_worker("-P", "prefork", "-c", "1")
    result = ignores_its_limit.delay(30)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=20)
    assert add.delay(2, 3).get(timeout=20) == 5  # a new child took over
    time.sleep(1.5)  # the killed child's message came back: it must be skipped, not run again
    assert add.delay(3, 4).get(timeout=20) == 7
    assert Execution.objects.filter(label="hard:start").count() == 1
    assert not Execution.objects.filter(label="hard:end").exists()
    assert AsyncResult(result.id).state == states.FAILURE
    assert "hard time limit" in worker.output()


def test_a_pool_that_cannot_enforce_a_hard_limit_says_so(start_worker):
    worker = start_worker("-P", "threads", "-c", "1")
    assert slow_record.apply_async((0.2, "threads"), time_limit=0.1).get(timeout=20) == "threads"
    wait_for(lambda: "are not enforced by this pool" in worker.output(), what="the warning")
