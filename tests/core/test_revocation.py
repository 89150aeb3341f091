"""Revocation is durable, reaches every worker, skips queued tasks and terminates running ones."""

from __future__ import annotations

import pytest

from django_tq import AsyncResult, states
from django_tq.models import QueueMessage, Revocation
from tests.conftest import wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import add, record, slow_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


def test_a_revoked_queued_task_never_runs(broker_url, start_worker):
    revoked = record.delay("revoked")
    kept = record.delay("kept")
    revoked.revoke()
    assert AsyncResult(revoked.id).state == states.REVOKED  # at once, before any worker saw it
    start_worker("-P", "solo")  # a worker started after the revocation still knows it
    assert kept.get(timeout=20) == "kept"
    marker = add.delay(1, 1)
    marker.get(timeout=20)
    assert not Execution.objects.filter(label="revoked").exists()
    assert AsyncResult(revoked.id).state == states.REVOKED
    if broker_url == "django://":
        assert not QueueMessage.objects.exists()  # the revoked message was acked off the queue


def test_revoke_reaches_a_running_worker(start_worker):
    start_worker("-P", "prefork", "-c", "1")
    add.delay(1, 1).get(timeout=20)  # the worker is up and has read the revocations once
    blocker = slow_record.delay(1.5, "blocker")
    wait_for(lambda: Execution.objects.filter(label="start:blocker").exists(), what="blocker start")
    later = record.delay("later")
    later.revoke()
    blocker.get(timeout=20)
    marker = add.delay(2, 2)
    assert marker.get(timeout=20) == 4
    assert not Execution.objects.filter(label="later").exists()


def test_terminate_kills_the_running_task_and_the_worker_goes_on(start_worker):
    worker = start_worker("-P", "prefork", "-c", "1")
    result = slow_record.delay(30, "doomed")
    wait_for(lambda: Execution.objects.filter(label="start:doomed").exists(), what="task start")
    result.revoke(terminate=True, signal="SIGKILL")
    wait_for(lambda: AsyncResult(result.id).state == states.REVOKED, timeout=15, what="REVOKED")
    assert add.delay(3, 4).get(timeout=20) == 7
    assert not Execution.objects.filter(label="end:doomed").exists()
    assert worker.output().count("Terminating revoked task") == 1
    assert Revocation.objects.get(task_id=result.id).terminate


def test_revoke_without_terminate_lets_a_running_task_finish(start_worker):
    start_worker("-P", "prefork", "-c", "1")
    result = slow_record.delay(1.0, "finishes")
    wait_for(lambda: Execution.objects.filter(label="start:finishes").exists(), what="task start")
    result.revoke()
    assert result.get(timeout=20) == "finishes"  # as in Celery: revoke does not stop a running task
