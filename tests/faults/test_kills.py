"""Workers killed and stopped in the middle of bursts: nothing lost, nothing run twice needlessly."""

from __future__ import annotations

import signal
import time

import pytest
from django.db import transaction

from django_tq import AsyncResult, states
from django_tq.exceptions import TaskError
from django_tq.models import DeadLetter, TaskResult
from tests.conftest import child_pids, wait_for
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

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BURST = 2000
KILLS = 5
#: seconds a recovered task may take beyond the lease (running it, on a loaded machine)
RECOVERY_SLACK = 5.0


def _recovered(running: set[str]) -> bool:
    return not running & running_now(list(running)) and not Runs.read().lost(list(running))


@pytest.mark.timeout(600)  # 2,000 tasks: generous on a loaded machine
def test_five_sigkills_during_a_burst_lose_nothing(broker_url, settings, start_worker):
    settings.TQ = {**settings.TQ, "LEASE_SECONDS": LEASE_SECONDS}
    with transaction.atomic():  # one commit for 2,000 result rows; published at the commit
        ids = burst(BURST)
    running_at_kills: set[str] = set()
    worker = start_worker("-P", "prefork", "-c", "2")
    for kill in range(1, KILLS + 1):
        target = kill * BURST // (KILLS + 1)
        wait_for(lambda t=target: finished_count() >= t, 120, interval=0.02, what=f"{target} done")
        worker.kill_tree()
        killed_at = time.monotonic()
        running = running_now(ids)
        assert len(running) <= 2  # -c 2: one task per child at most
        running_at_kills |= running
        worker = start_worker("-P", "prefork", "-c", "2")  # a new worker after each kill
        ready_after = time.monotonic() - killed_at
        if running:
            wait_for(lambda r=running: _recovered(r), 60, interval=0.05, what="recovery")
            # Within the lease on django:// and redis://; at once on RabbitMQ, which redelivers
            # when the dead worker's connection drops. The new worker's start-up does not count.
            expected = (
                ready_after if broker_url.startswith("amqp") else max(LEASE_SECONDS, ready_after)
            )
            assert time.monotonic() - killed_at <= expected + RECOVERY_SLACK
    runs = wait_until_finished(ids, 180)
    assert running_at_kills  # the kills did hit running tasks
    assert runs.lost(ids) == set()
    assert runs.duplicated() <= running_at_kills
    assert not TaskResult.objects.filter(task_id__in=ids).exclude(state=states.SUCCESS).exists()


def test_sigterm_during_a_burst_loses_and_duplicates_nothing(broker_url, settings, start_worker):
    longest = 1.0
    ids = [*burst(60, seconds=0.01), *burst(2, seconds=longest, label="long"), *burst(140)]
    worker = start_worker("-P", "prefork", "-c", "2")
    wait_for(
        lambda: Execution.objects.filter(label="start:long").count() == 2, 60, what="long tasks"
    )
    worker.signal(signal.SIGTERM)
    stopping_at = time.monotonic()
    assert worker.process.wait(30) == 0, worker.output()
    assert time.monotonic() - stopping_at <= longest + 2
    assert Execution.objects.filter(label="end:long").count() == 2  # finished, not abandoned
    start_worker("-P", "prefork", "-c", "2")
    assert_exactly_once(ids, wait_until_finished(ids, 60))


def test_a_poison_message_in_a_burst_dies_alone(broker_url, settings, start_worker):
    settings.TQ = {**settings.TQ, "MAX_DELIVERIES": 3, "LEASE_SECONDS": LEASE_SECONDS}
    ids = burst(100)
    poison = kill_my_process.delay()
    ids += burst(100)
    worker = start_worker("-P", "prefork", "-c", "2")
    children = set(child_pids(worker.pid))
    with pytest.raises(TaskError, match="delivered 4 times"):
        AsyncResult(poison.id).get(timeout=60)
    assert_exactly_once(ids, wait_until_finished(ids, 60))
    assert 1 <= Execution.objects.filter(label="poison").count() <= 3  # MAX_DELIVERIES
    assert AsyncResult(poison.id).state == states.DEAD
    assert DeadLetter.objects.get(task_id=poison.id).reason.startswith("delivered 4 times")
    assert worker.process.poll() is None
    assert len(child_pids(worker.pid)) == 2 and set(child_pids(worker.pid)) != children  # respawned


def test_a_task_longer_than_the_lease_is_never_duplicated(broker_url, settings, start_worker):
    if broker_url.startswith("amqp"):
        pytest.skip("RabbitMQ has no lease: an unacked message stays with its consumer")
    settings.TQ = {**settings.TQ, "LEASE_SECONDS": LEASE_SECONDS}
    long = slow_record.delay(LEASE_SECONDS + 2, "long")  # renewed twice, at least
    neighbours = burst(6, seconds=0.2)
    # The first worker takes the long task and prefetches neighbours; a second one would claim
    # any lease that expired.
    start_worker("-P", "prefork", "-c", "1", "--prefetch-multiplier", "4")
    wait_for(lambda: Execution.objects.filter(label="start:long").exists(), 30, what="long start")
    start_worker("-P", "prefork", "-c", "1")
    assert_exactly_once([long.id, *neighbours], wait_until_finished([long.id, *neighbours], 60))
    assert AsyncResult(long.id).state == states.SUCCESS
