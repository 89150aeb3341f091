"""tqpurge, tqstatus and tqcleanup on every transport, and against a real worker."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management.base import CommandError
from django.utils import timezone

from django_tq import AsyncResult, chord, states
from django_tq.broker import get_broker
from django_tq.models import (
    ChordCounter,
    ParkedMessage,
    QueueDepthSample,
    Revocation,
    TaskResult,
    UniqueLock,
    WorkerState,
)
from tests.conftest import command_output, wait_for
from tests.testapp.tasks import add, record, record_sum, sync_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


def _fill(queue: str) -> dict[str, str]:
    """Send what a purge must deal with: plain tasks, a unique one, a parked one, a chord."""
    ids = {f"plain{i}": record.delay(f"plain{i}").id for i in range(3)}
    ids["unique"] = sync_user.delay(7).id
    ids["parked"] = record.apply_async(("parked",), countdown=3600).id
    ids["chord"] = chord([add.s(1, 1), add.s(2, 2)], record_sum.s()).delay().id
    wait_for(lambda: get_broker().depth(queue) >= 6, 10, what="messages at the broker")
    return ids


def test_purge_revokes_every_waiting_task_and_fails_its_chord(broker_url, queue_name, monkeypatch):
    ids = _fill(queue_name)
    assert ParkedMessage.objects.filter(queue=queue_name).count() == 1
    out = command_output("tqpurge", "-Q", queue_name, "--force")
    assert f"{queue_name}: 6 waiting, 1 parked" in out
    assert "Purged 7 message(s)" in out and "7 revoked" in out
    assert get_broker().depth(queue_name) == 0
    assert not ParkedMessage.objects.filter(queue=queue_name).exists()
    for name in ("plain0", "plain1", "plain2", "unique", "parked"):
        result = TaskResult.objects.get(task_id=ids[name])
        assert result.state == states.REVOKED and result.result == {"reason": "purged"}, name
    assert not UniqueLock.objects.exists()  # a purged unique task frees its key
    assert ChordCounter.objects.get().state == ChordCounter.FAILURE
    assert AsyncResult(ids["chord"]).state == states.FAILURE  # nothing waits for the body
    assert not TaskResult.objects.filter(state=states.QUEUED).exists()


def test_discard_deletes_unread_and_still_revokes_the_results(broker_url, queue_name):
    ids = _fill(queue_name)
    out = command_output("tqpurge", "-Q", queue_name, "--force", "--discard")
    assert "7 discarded unread" in out
    assert get_broker().depth(queue_name) == 0
    assert not ParkedMessage.objects.filter(queue=queue_name).exists()
    assert TaskResult.objects.get(task_id=ids["plain0"]).state == states.REVOKED
    assert not UniqueLock.objects.exists()
    assert not TaskResult.objects.filter(state=states.QUEUED).exists()


@pytest.mark.parametrize("answer", ["", "n\n", "maybe\n"])
def test_purge_asks_first_and_a_missing_yes_purges_nothing(
    queue_name, settings, monkeypatch, answer
):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    record.delay("kept")
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    with pytest.raises(CommandError, match="Nothing purged"):
        command_output("tqpurge")
    assert get_broker().depth(queue_name) == 1


def test_purge_with_yes_purges(queue_name, settings, monkeypatch):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    record.delay("gone")
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert "Purged 1 message(s)" in command_output("tqpurge", "-Q", queue_name)
    assert get_broker().depth(queue_name) == 0


def test_purge_leaves_other_queues_and_later_tasks_alone(queue_name, settings):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    other = record.apply_async(("other",), queue=f"{queue_name}-other")
    command_output("tqpurge", "-Q", queue_name, "--force")
    assert TaskResult.objects.get(task_id=other.id).state == states.QUEUED
    assert get_broker().depth(f"{queue_name}-other") == 1


def test_purge_rejects_an_empty_queue_name():
    with pytest.raises(CommandError, match="Empty queue name"):
        command_output("tqpurge", "-Q", "a,,b", "--force")


def test_a_prefetched_copy_of_a_purged_task_does_not_run(queue_name, settings, start_worker):
    """The worker holds messages the purge cannot delete; their results say REVOKED, so a worker
    that reaches them skips them."""
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    result = record.delay("held")
    message_row = TaskResult.objects.get(task_id=result.id)
    # As if a worker had claimed it just before the purge: a leased row is not deleted.
    from django_tq.models import QueueMessage

    QueueMessage.objects.filter(queue=queue_name).update(
        lease_owner="tq-1@elsewhere", lease_expires_at=timezone.now() + dt.timedelta(seconds=1)
    )
    out = command_output("tqpurge", "-Q", queue_name, "--force")
    assert "1 QUEUED result(s) marked REVOKED" in out
    assert TaskResult.objects.get(pk=message_row.pk).state == states.REVOKED
    worker = start_worker("-c", "1", "-P", "solo")
    wait_for(lambda: not QueueMessage.objects.filter(queue=queue_name).exists(), 20)
    worker.stop()
    assert TaskResult.objects.get(pk=message_row.pk).state == states.REVOKED
    assert "held" not in [r.result for r in TaskResult.objects.all()]


# -- tqstatus ---------------------------------------------------------------------------------------
def _worker_row(name: str, *, beat_ago: float, stopped: bool = False) -> WorkerState:
    now = timezone.now()
    return WorkerState.objects.create(
        hostname=name,
        pid=123,
        queues=["default", "mail"],
        pool="prefork",
        concurrency=4,
        processed=1234,
        started_at=now - dt.timedelta(hours=1),
        last_heartbeat=now - dt.timedelta(seconds=beat_ago),
        stopped_at=now if stopped else None,
    )


def test_status_lists_alive_and_lost_workers_and_hides_stopped_ones():
    _worker_row("a@host", beat_ago=2)
    _worker_row("b@host", beat_ago=600)
    _worker_row("c@host", beat_ago=700, stopped=True)
    out = command_output("tqstatus")
    assert "a@host: ALIVE  pid 123  prefork x4  queues default,mail  1,234 processed" in out
    assert "b@host: LOST" in out
    assert "c@host" not in out
    assert "1 worker(s) alive, 1 not." in out
    assert "c@host: STOPPED" in command_output("tqstatus", "--all")
    data = json.loads(command_output("tqstatus", "--json"))
    assert data["alive"] == 1
    assert [(w["hostname"], w["status"]) for w in data["workers"]] == [
        ("a@host", "alive"),
        ("b@host", "lost"),
    ]


def test_status_exits_1_when_no_worker_is_alive():
    _worker_row("b@host", beat_ago=600)
    with pytest.raises(SystemExit) as exit_:
        command_output("tqstatus")
    assert exit_.value.code == 1


def test_status_sees_a_real_worker(queue_name, settings, start_worker):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    start_worker("-n", "status-probe@%h", "-c", "1", "-P", "solo")
    wait_for(lambda: WorkerState.objects.filter(hostname__startswith="status-probe@").exists(), 20)
    out = command_output("tqstatus")
    assert "status-probe@" in out and "ALIVE" in out and f"queues {queue_name}" in out


# -- tqcleanup --------------------------------------------------------------------------------------
def _finished(task_id: str, days_ago: float) -> None:
    done = timezone.now() - dt.timedelta(days=days_ago)
    TaskResult.objects.create(task_id=task_id, task_name="t", state=states.SUCCESS, date_done=done)


def test_cleanup_deletes_what_is_older_than_the_age_given():
    _finished("old", 3)
    _finished("new", 0.5)
    TaskResult.objects.create(task_id="waiting", task_name="t", state=states.QUEUED)
    Revocation.objects.create(task_id="gone")
    Revocation.objects.filter(task_id="gone").update(
        created_at=timezone.now() - dt.timedelta(days=5)
    )
    out = command_output("tqcleanup", "--older-than", "2d")
    assert "Deleted 1 result(s), 1 revocation(s)" in out
    assert set(TaskResult.objects.values_list("task_id", flat=True)) == {"new", "waiting"}


def test_cleanup_defaults_to_result_expires_and_deletes_every_batch(settings):
    settings.TQ = {**settings.TQ, "RESULT_EXPIRES": dt.timedelta(days=1)}
    done = timezone.now() - dt.timedelta(days=2)
    TaskResult.objects.bulk_create(  # more than one batch of the backend's cleanup (1,000)
        TaskResult(task_id=f"old{i}", task_name="t", state=states.SUCCESS, date_done=done)
        for i in range(2500)
    )
    _finished("new", 0)
    QueueDepthSample.objects.record([("default", 3)], timezone.now() - dt.timedelta(days=2))
    assert "Deleted 2,500 result(s)" in command_output("tqcleanup")
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["new"]
    assert not QueueDepthSample.objects.exists()


def test_cleanup_with_results_that_never_expire(settings):
    settings.TQ = {**settings.TQ, "RESULT_EXPIRES": None}
    _finished("old", 300)
    assert "never expire" in command_output("tqcleanup")
    assert TaskResult.objects.exists()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("3600", 3600),
        ("P1D", 86400),
    ],
)
def test_cleanup_ages(value, seconds):
    from django_tq.management.commands.tqcleanup import age

    assert age(value) == dt.timedelta(seconds=seconds)


def test_cleanup_refuses_a_bad_age():
    with pytest.raises(CommandError, match="not an age"):
        command_output("tqcleanup", "--older-than", "soon")
