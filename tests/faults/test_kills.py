"""Workers killed and stopped in the middle of bursts: nothing lost, nothing run twice needlessly."""

from __future__ import annotations

import os
import signal
import time

import pytest

from django_tq import AsyncResult, states
from django_tq.exceptions import TaskError
from django_tq.models import DeadLetter, TaskResult
from tests.conftest import wait_for
from tests.faults.conftest import (
    LEASE_SECONDS,
    Runs,
    assert_exactly_once,
    burst,
    finished_count,
    running_now,
    wait_until_finished,
)
from tests.testapp.models import Execution
from tests.testapp.tasks import kill_my_process, slow_record

pytestmark = pytest.mark.django_db(transaction=True)

BURST = 2000
KILLS = 5
#: seconds a recovered task may take beyond the lease (running it, on a loaded machine)
RECOVERY_SLACK = 5.0


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(child) for child in handle.read().split()]


def _recovered(running: set[str]) -> bool:
    return not running & running_now(list(running)) and not Runs.read().lost(list(running))


def test_five_sigkills_during_a_burst_lose_nothing(broker_url, settings, start_worker):
    settings.TQ = {**settings.TQ, "LEASE_SECONDS": LEASE_SECONDS}
    ids = burst(BURST)
    running_at_kills: set[str] = set()
    worker = start_worker("-P", "prefork", "-c", "2")
    for kill in range(1, KILLS + 1):
        target = kill * BURST // (KILLS + 1)
        wait_for(lambda: finished_count() >= target, 120, interval=0.02, what=f"{target} done")
        worker.kill_tree()
        killed_at = time.monotonic()
        running = running_now(ids)
        assert len(running) <= 2  # -c 2: one task per child at most
        running_at_kills |= running
        worker = start_worker("-P", "prefork", "-c", "2")  # a new worker after each kill
        ready_after = time.monotonic() - killed_at
        if running:
            wait_for(lambda: _recovered(running), 60, interval=0.05, what="recovery")
            # Within the lease on django:// and redis://; at once on RabbitMQ, which redelivers
            # when the dead worker's connection drops. The new worker's start-up does not count.
            expected = ready_after if broker_url.startswith("amqp") else max(
                LEASE_SECONDS, ready_after
            )
            assert time.monotonic() - killed_at <= expected + RECOVERY_SLACK
    runs = wait_until_finished(ids, 180)
    assert runs.lost(ids) == set()
    assert runs.duplicated() <= running_at_kills
    assert not TaskResult.objects.filter(task_id__in=ids).exclude(state=states.SUCCESS).exists()
