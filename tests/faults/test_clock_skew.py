"""A worker whose clock is off (libfaketime): how much skew the ``django://`` leases tolerate.

On ``django://`` a lease is a time in the message row, set and compared by the workers' own
clocks. A consumer renews its leases every third of ``LEASE_SECONDS``, so a lease it holds has at
least two thirds of ``LEASE_SECONDS`` left whenever another worker looks: a worker whose clock is
ahead by less than that never takes a running task; one ahead by more runs it a second time.
These tests run a task on a worker with a true clock and start a second worker whose clock is
ahead, with ``LEASE_SECONDS = 3`` (the tolerance is then 2 s), and count the task's starts.
(``redis://`` compares leases by Redis' own clock and RabbitMQ has no leases: skew cannot cause
this there.)
"""

from __future__ import annotations

import os
import time

import pytest

from django_tq import states
from django_tq.models import TaskResult
from tests.conftest import REQUIRE_SERVICES, wait_for
from tests.faults.conftest import LEASE_SECONDS
from tests.testapp.models import Execution
from tests.testapp.tasks import slow_record

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def clock_ahead(seconds: float) -> dict[str, str]:
    """The environment of a process whose wall clock is ``seconds`` ahead (monotonic untouched)."""
    if not os.path.exists(LIBFAKETIME):
        if REQUIRE_SERVICES:
            pytest.fail(
                f"{LIBFAKETIME} is missing (Debian package faketime; TQ_REQUIRE_SERVICES=1)"
            )
        pytest.skip(f"{LIBFAKETIME} is missing (Debian package faketime)")
    return {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME": f"{seconds:+g}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",  # children keep the offset, not a new start time
    }


def _run_with_a_second_worker_ahead(settings, start_worker, queue_name, skew: float) -> int:
    """Return how often a 12 s task started while a worker ``skew`` s ahead was watching."""
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name, "LEASE_SECONDS": LEASE_SECONDS}
    options = ("-P", "solo", "--prefetch-multiplier", "1")
    start_worker(*options, "-n", "true-clock@test")
    task_id = slow_record.delay(12, "skew").id  # long enough for the second worker to start
    wait_for(lambda: Execution.objects.filter(task_id=task_id).exists(), 20, what="first start")
    start_worker(*options, "-n", "ahead@test", env=clock_ahead(skew))
    wait_for(
        lambda: TaskResult.objects.filter(task_id=task_id, state=states.SUCCESS).exists(),
        30,
        what="the task to finish",
    )
    time.sleep(1)  # a second run, if any, has written its start row by now
    return Execution.objects.filter(task_id=task_id, label="start:skew").count()


def test_a_worker_ahead_by_less_than_two_thirds_of_the_lease_never_takes_a_running_task(
    settings, start_worker, queue_name
):
    assert _run_with_a_second_worker_ahead(settings, start_worker, queue_name, 1.0) == 1


def test_a_worker_ahead_by_more_than_the_lease_runs_a_running_task_again(
    settings, start_worker, queue_name
):
    # the bound is real: this is what docs/deployment.md tells operators to avoid
    assert _run_with_a_second_worker_ahead(settings, start_worker, queue_name, 5.0) == 2
