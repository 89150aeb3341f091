"""``Scheduler.tick(now)`` with fixed datetimes: every schedule type, misfire policies, options,
one-off and expiring tasks, claims between beats, re-sending claimed runs, and DST days."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from django_tq import signals
from django_tq.beat.due import RUN_ALL_LIMIT
from django_tq.beat.scheduler import Scheduler
from django_tq.models import PeriodicTask, PeriodicTaskRun, TaskResult
from django_tq.models.periodic_tasks import occurrence_task_id
from django_tq.schedules import Clocked, crontab
from django_tq.testing import CapturedQueue, capture
from tests.beat.conftest import make_task, utc

pytestmark = [pytest.mark.django_db, pytest.mark.db]

MINUTE = dt.timedelta(minutes=1)
T0 = utc("2024-05-01 12:00")


@pytest.fixture
def beat() -> Scheduler:
    return Scheduler(name="beat-a", max_interval=5, grace=dt.timedelta(seconds=10))


def scheduled(queue: CapturedQueue) -> list[str]:
    """Return the scheduled time of every captured message (from its headers)."""
    return [message.headers["scheduled_for"] for message in queue.messages]


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


# -- every schedule type --------------------------------------------------------------------------
def test_an_interval_runs_every_interval_after_creation(
    beat: Scheduler, queue: CapturedQueue
) -> None:
    job = make_task(dt.timedelta(seconds=10), created=T0, kwargs={"label": "x"})
    assert beat.tick(T0 + dt.timedelta(seconds=9)) == []
    (sent,) = beat.tick(T0 + dt.timedelta(seconds=10))
    assert sent.scheduled_for == T0 + dt.timedelta(seconds=10)
    assert sent.task_id == occurrence_task_id(job.pk, sent.scheduled_for)
    assert beat.tick(T0 + dt.timedelta(seconds=11)) == []  # already sent
    assert [s.scheduled_for for s in beat.tick(T0 + dt.timedelta(seconds=20))] == [
        T0 + dt.timedelta(seconds=20)
    ]
    job.refresh_from_db()
    assert job.last_run_at == T0 + dt.timedelta(seconds=20) and job.total_run_count == 2
    (message, _) = queue.messages
    assert (
        message.id == sent.task_id and message.task == job.task and message.kwargs == {"label": "x"}
    )
    run = PeriodicTaskRun.objects.get(task_id=sent.task_id)
    assert run.claimed_by == "beat-a" and run.sent_at == T0 + dt.timedelta(seconds=10)


def test_a_crontab_runs_at_its_times(beat: Scheduler, queue: CapturedQueue) -> None:
    make_task(crontab(minute="*/15", timezone="UTC"), created=T0 - MINUTE)
    for minute in range(0, 61, 5):
        beat.tick(T0 + minute * MINUTE)
    assert scheduled(queue) == [
        iso(T0),
        iso(T0 + 15 * MINUTE),
        iso(T0 + 30 * MINUTE),
        iso(T0 + 45 * MINUTE),
        iso(T0 + 60 * MINUTE),
    ]


def test_a_clocked_task_runs_once_at_its_time(beat: Scheduler, queue: CapturedQueue) -> None:
    make_task(Clocked(T0 + MINUTE), created=T0)
    beat.tick(T0)
    beat.tick(T0 + MINUTE)
    beat.tick(T0 + 2 * MINUTE)
    assert scheduled(queue) == [iso(T0 + MINUTE)]


def test_a_clocked_time_already_past_runs_at_once_unless_skipped(
    beat: Scheduler, queue: CapturedQueue
) -> None:
    make_task(Clocked(T0 - dt.timedelta(hours=1)), name="late", created=T0)
    make_task(
        Clocked(T0 - dt.timedelta(hours=2)), name="skipped", created=T0, misfire_policy="skip"
    )
    beat.tick(T0 + MINUTE)
    assert [m.headers["periodic_task"] for m in queue.messages] == ["late"]


def test_disabled_tasks_are_not_sent(beat: Scheduler, queue: CapturedQueue) -> None:
    make_task(dt.timedelta(seconds=10), created=T0, enabled=False)
    assert beat.tick(T0 + MINUTE) == []


def test_start_time_and_expires_bound_the_runs(beat: Scheduler, queue: CapturedQueue) -> None:
    make_task(
        dt.timedelta(minutes=10),
        created=T0,
        start_time=T0 + dt.timedelta(minutes=25),
        expires=T0 + dt.timedelta(minutes=50),
    )
    for minute in range(0, 70, 5):
        beat.tick(T0 + minute * MINUTE)
    assert scheduled(queue) == [
        iso(T0 + 25 * MINUTE),
        iso(T0 + 35 * MINUTE),
        iso(T0 + 45 * MINUTE),
    ]


def test_one_off_runs_once_then_disables_itself(beat: Scheduler, queue: CapturedQueue) -> None:
    job = make_task(dt.timedelta(seconds=10), created=T0, one_off=True)
    beat.tick(T0 + dt.timedelta(seconds=10))
    beat.tick(T0 + dt.timedelta(seconds=20))
    job.refresh_from_db()
    assert len(queue) == 1 and not job.enabled and job.total_run_count == 1


def test_delivery_options_reach_the_message(beat: Scheduler, queue: CapturedQueue) -> None:
    make_task(
        dt.timedelta(minutes=1),
        name="report",
        created=T0,
        args=[1, "two"],
        kwargs={"label": "three"},
        queue="reports",
        priority=7,
        headers={"source": "beat-test"},
        expires=T0 + dt.timedelta(hours=1),
        expire_seconds=30,
    )
    beat.tick(T0 + MINUTE)
    (message,) = queue.messages
    assert message.args == (1, "two") and message.kwargs == {"label": "three"}
    assert message.queue == "reports" and message.priority == 7
    assert message.headers == {
        "source": "beat-test",
        "periodic_task": "report",
        "scheduled_for": iso(T0 + MINUTE),
    }
    assert message.expires == T0 + MINUTE + dt.timedelta(seconds=30)  # the earlier deadline


def test_the_loop_sleeps_until_the_next_occurrence(beat: Scheduler) -> None:
    make_task(dt.timedelta(seconds=3), created=T0)
    beat.tick(T0 + dt.timedelta(seconds=1))
    assert beat.seconds_to_wait(T0 + dt.timedelta(seconds=1)) == 2.0
    assert beat.seconds_to_wait(T0 + dt.timedelta(seconds=4)) == 0.0
    beat.tick(T0 + dt.timedelta(seconds=100))
    assert beat.next_due is not None


def test_each_tick_sends_the_beat_tick_signal(beat: Scheduler, queue: CapturedQueue) -> None:
    make_task(dt.timedelta(seconds=10), created=T0)
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append(kwargs)

    signals.beat_tick.connect(receiver)
    try:
        beat.tick(T0 + dt.timedelta(seconds=10))
    finally:
        signals.beat_tick.disconnect(receiver)
    assert seen[0]["now"] == T0 + dt.timedelta(seconds=10) and len(seen[0]["sent"]) == 1


# -- misfire policies -----------------------------------------------------------------------------
def down_for_an_hour(beat: Scheduler, policy: str) -> PeriodicTask:
    """A minutely task last run at T0, then beat comes back at T0 + 1h + 30s."""
    job = make_task(dt.timedelta(minutes=1), created=T0 - MINUTE, misfire_policy=policy)
    PeriodicTask.objects.filter(pk=job.pk).update(last_run_at=T0)
    beat.tick(T0 + dt.timedelta(hours=1, seconds=30))
    job.refresh_from_db()
    return job


def test_run_once_sends_one_catch_up_run(beat: Scheduler, queue: CapturedQueue) -> None:
    job = down_for_an_hour(beat, "run_once")
    assert scheduled(queue) == [iso(T0 + 60 * MINUTE)]
    assert job.last_run_at == T0 + 60 * MINUTE
    beat.tick(T0 + 61 * MINUTE)
    assert scheduled(queue)[-1] == iso(T0 + 61 * MINUTE)


def test_skip_drops_the_missed_runs_and_goes_on(beat: Scheduler, queue: CapturedQueue) -> None:
    job = down_for_an_hour(beat, "skip")
    assert len(queue) == 0 and job.last_run_at == T0 + 60 * MINUTE and job.total_run_count == 0
    beat.tick(T0 + 61 * MINUTE)
    assert scheduled(queue) == [iso(T0 + 61 * MINUTE)]


def test_run_all_sends_every_missed_run(beat: Scheduler, queue: CapturedQueue) -> None:
    job = down_for_an_hour(beat, "run_all")
    assert scheduled(queue) == [iso(T0 + n * MINUTE) for n in range(1, 61)]
    assert job.total_run_count == 60


def test_run_all_is_bounded(beat: Scheduler, queue: CapturedQueue) -> None:
    job = make_task(dt.timedelta(minutes=1), created=T0 - MINUTE, misfire_policy="run_all")
    PeriodicTask.objects.filter(pk=job.pk).update(last_run_at=T0)
    beat.tick(T0 + dt.timedelta(hours=5, seconds=30))
    assert len(queue) == RUN_ALL_LIMIT
    assert scheduled(queue)[-1] == iso(T0 + dt.timedelta(hours=5))


def test_on_time_runs_are_never_collapsed(beat: Scheduler, queue: CapturedQueue) -> None:
    make_task(dt.timedelta(seconds=1), created=T0)
    beat.tick(T0 + dt.timedelta(seconds=3))  # a slow tick: three runs due, all within the grace
    assert scheduled(queue) == [iso(T0 + dt.timedelta(seconds=n)) for n in (1, 2, 3)]


def test_an_edit_starts_the_schedule_afresh(beat: Scheduler, queue: CapturedQueue) -> None:
    old = make_task(
        crontab(minute=0, timezone="UTC"), name="paused", created=T0 - dt.timedelta(days=3)
    )
    PeriodicTask.objects.filter(pk=old.pk).update(
        last_run_at=T0 - dt.timedelta(days=2), date_changed=T0 + 20 * MINUTE
    )
    untouched = make_task(
        crontab(minute=0, timezone="UTC"), name="untouched", created=T0 - dt.timedelta(days=3)
    )
    PeriodicTask.objects.filter(pk=untouched.pk).update(last_run_at=T0 - dt.timedelta(days=2))
    beat.tick(T0 + 21 * MINUTE)
    assert [m.headers["periodic_task"] for m in queue.messages] == ["untouched"]  # catch-up
    beat.tick(T0 + 60 * MINUTE)
    assert [m.headers["periodic_task"] for m in queue.messages][1:] == ["paused", "untouched"]


# -- several beats --------------------------------------------------------------------------------
def test_an_occurrence_claimed_by_another_beat_is_not_sent(queue: CapturedQueue) -> None:
    job = make_task(dt.timedelta(seconds=10), created=T0)
    first, second = Scheduler(name="a"), Scheduler(name="b")
    stale = PeriodicTask.objects.get(pk=job.pk)  # what "b" read before "a" sent
    now = T0 + dt.timedelta(seconds=10)
    assert len(first.tick(now)) == 1
    assert second.send_due(stale, now) == []
    assert second.tick(now + dt.timedelta(seconds=1)) == []
    assert len(queue) == 1
    assert PeriodicTaskRun.objects.get().claimed_by == "a"


def test_a_one_off_task_is_sent_by_one_beat_only(queue: CapturedQueue) -> None:
    job = make_task(dt.timedelta(seconds=1), created=T0, one_off=True)
    stale = PeriodicTask.objects.get(pk=job.pk)
    Scheduler(name="a").tick(T0 + dt.timedelta(seconds=1))
    # "b" read the task before "a" disabled it, and ticks a second later: another occurrence.
    assert Scheduler(name="b").send_due(stale, T0 + dt.timedelta(seconds=2)) == []
    assert len(queue) == 1 and PeriodicTaskRun.objects.count() == 1


# -- re-sending runs claimed but not sent (brokers outside the database) ------------------------
@pytest.fixture
def external_broker(settings: Any) -> None:
    """An external broker URL: claim, publish and mark sent are separate steps."""
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": "redis://127.0.0.1:1/0",  # nothing listens: publishing fails at once
        "BROKER_CONNECTION_TIMEOUT": 0.5,
    }


def stale_run(
    job: PeriodicTask, scheduled_for: dt.datetime, claimed_at: dt.datetime
) -> PeriodicTaskRun:
    return PeriodicTaskRun.objects.create(
        periodic_task=job,
        scheduled_for=scheduled_for,
        task_id=occurrence_task_id(job.pk, scheduled_for),
        claimed_at=claimed_at,
        claimed_by="dead-beat",
    )


def test_a_run_claimed_but_never_sent_is_sent_by_another_beat(
    external_broker: None, beat: Scheduler, queue: CapturedQueue
) -> None:
    job = make_task(dt.timedelta(hours=1), created=T0)
    run = stale_run(job, T0, claimed_at=T0)
    assert beat.tick(T0 + dt.timedelta(seconds=5)) == []  # not stale yet
    (sent,) = beat.tick(T0 + dt.timedelta(seconds=30))
    assert sent.task_id == run.task_id
    assert queue.messages[0].id == run.task_id
    run.refresh_from_db()
    assert run.sent_at == T0 + dt.timedelta(seconds=30) and run.claimed_by == "beat-a"


def test_a_stale_run_whose_task_reached_a_worker_is_only_marked_sent(
    external_broker: None, beat: Scheduler, queue: CapturedQueue
) -> None:
    job = make_task(dt.timedelta(hours=1), created=T0)
    run = stale_run(job, T0, claimed_at=T0)
    TaskResult.objects.create(
        task_id=run.task_id, task_name=job.task, state="STARTED", worker="tq@x"
    )
    assert beat.tick(T0 + dt.timedelta(seconds=30)) == []
    run.refresh_from_db()
    assert run.sent_at is not None and len(queue) == 0


@pytest.mark.django_db(transaction=True)  # outside a test transaction the publish is immediate
def test_a_publish_failure_leaves_the_run_claimed_for_a_retry(
    external_broker: None, beat: Scheduler
) -> None:
    make_task(dt.timedelta(minutes=1), created=T0)
    assert beat.tick(T0 + MINUTE) == []  # the broker does not answer
    run = PeriodicTaskRun.objects.get()
    assert run.sent_at is None
    assert TaskResult.objects.get(task_id=run.task_id).state == "FAILURE"
    with capture() as queue:  # the broker is back
        (sent,) = beat.tick(T0 + MINUTE + dt.timedelta(seconds=30))
    assert sent.task_id == run.task_id and [m.id for m in queue.messages] == [run.task_id]
    run.refresh_from_db()
    assert run.sent_at is not None
    assert TaskResult.objects.get(task_id=run.task_id).state == "QUEUED"


def test_old_runs_are_deleted_but_the_latest_is_kept(beat: Scheduler, queue: CapturedQueue) -> None:
    job = make_task(dt.timedelta(days=1), created=T0 - dt.timedelta(days=30))
    for days in (20, 15, 10):
        stale_run(job, T0 - dt.timedelta(days=days), claimed_at=T0).save()
    PeriodicTaskRun.objects.update(sent_at=T0)
    PeriodicTask.objects.filter(pk=job.pk).update(last_run_at=T0 - dt.timedelta(days=10))
    assert beat.cleanup(T0) == 2
    assert list(PeriodicTaskRun.objects.values_list("scheduled_for", flat=True)) == [
        T0 - dt.timedelta(days=10)
    ]


# -- daylight saving time, through the scheduler -------------------------------------------------
def run_through_local_day(zone: str, day: dt.date, cron: Any, queue: CapturedQueue) -> list[str]:
    """Tick every 10 minutes through local ``day``; return the local times of what was sent."""
    tz = ZoneInfo(zone)
    start = dt.datetime.combine(day, dt.time(), tz).astimezone(dt.UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
    make_task(cron, created=start - dt.timedelta(seconds=1))
    beat = Scheduler(name="dst", max_interval=5, grace=dt.timedelta(seconds=10))
    now = start
    while now < end:
        beat.tick(now)
        now += dt.timedelta(minutes=10)
    return [
        dt.datetime.fromisoformat(m.headers["scheduled_for"]).astimezone(tz).strftime("%H:%M%z")
        for m in queue.messages
    ]


@pytest.mark.parametrize(
    ("zone", "day", "runs"),
    [
        ("Europe/Paris", dt.date(2024, 3, 31), 23),
        ("Europe/Paris", dt.date(2024, 10, 27), 25),
        ("America/New_York", dt.date(2024, 3, 10), 23),
        ("America/New_York", dt.date(2024, 11, 3), 25),
    ],
)
def test_an_hourly_task_runs_23_or_25_times_on_dst_days(
    zone: str, day: dt.date, runs: int, queue: CapturedQueue
) -> None:
    sent = run_through_local_day(zone, day, crontab(minute=0, timezone=zone), queue)
    assert (
        len(sent)
        == runs
        == len(set(PeriodicTaskRun.objects.values_list("scheduled_for", flat=True)))
    )


@pytest.mark.parametrize(
    ("zone", "day", "hour", "expected"),
    [
        ("Europe/Paris", dt.date(2024, 3, 31), 2, ["03:00+0200"]),
        ("Europe/Paris", dt.date(2024, 10, 27), 2, ["02:30+0200"]),
        ("America/New_York", dt.date(2024, 3, 10), 2, ["03:00-0400"]),
        ("America/New_York", dt.date(2024, 11, 3), 1, ["01:30-0400"]),
    ],
)
def test_a_daily_task_in_the_gap_or_the_overlap_runs_once(
    zone: str, day: dt.date, hour: int, expected: list[str], queue: CapturedQueue
) -> None:
    cron = crontab(minute=30, hour=hour, timezone=zone)
    assert run_through_local_day(zone, day, cron, queue) == expected


def test_a_unique_task_still_running_is_joined_not_sent_again(
    beat: Scheduler, queue: CapturedQueue
) -> None:
    job = make_task(
        dt.timedelta(minutes=1),
        created=T0,
        task="tests.testapp.tasks.sync_user",
        kwargs={"user_id": 1},
    )
    (first,) = beat.tick(T0 + MINUTE)
    (second,) = beat.tick(T0 + 2 * MINUTE)  # the first one has not run yet: it holds the key
    assert second.task_id == first.task_id == occurrence_task_id(job.pk, T0 + MINUTE)
    assert len(queue.messages) == 1
    runs = PeriodicTaskRun.objects.order_by("scheduled_for")
    assert [run.task_id for run in runs] == [first.task_id, first.task_id]  # what ran each one
    assert all(run.sent_at is not None for run in runs)
