"""Real ``tqbeat`` processes (and ``tqworker --beat``) against the test database, with a worker
running what they send: two beats, an edit, one beat SIGKILLed, then the task disabled."""

from __future__ import annotations

import datetime as dt
import signal
import time
from itertools import pairwise
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from django_tq.models import IntervalSchedule, PeriodicTask, PeriodicTaskRun
from tests.beat.conftest import RECORD
from tests.conftest import wait_for
from tests.testapp.models import Execution

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]

SECOND = dt.timedelta(seconds=1)


def every(seconds: int) -> IntervalSchedule:
    return IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")[0]


def runs_after(moment: dt.datetime, **filters: Any) -> int:
    return PeriodicTaskRun.objects.filter(scheduled_for__gt=moment, **filters).count()


def test_two_beats_send_every_occurrence_exactly_once(
    settings: Any, start_worker: Any, start_beat: Any
) -> None:
    # About a minute on PostgreSQL (the database several beats race on in production), about
    # 25 seconds in the SQLite leg.
    scale = 4 if connection.vendor == "postgresql" else 1
    settings.TQ = {**settings.TQ, "BEAT_MAX_LOOP_INTERVAL": 1}
    job = PeriodicTask.objects.create(
        name="every-second", task=RECORD, interval=every(1), kwargs={"label": "first"}
    )
    start_worker("-P", "threads", "-c", "4")
    doomed = start_beat("-n", "beat-a")
    survivor = start_beat("-n", "beat-b")
    wait_for(
        lambda: PeriodicTaskRun.objects.count() >= 5 * scale, timeout=20 * scale, what="first runs"
    )

    # An edit in the database (what the admin does): new arguments, a 2 s interval.
    job.refresh_from_db()
    job.kwargs, job.interval = {"label": "edited"}, every(2)
    job.save()
    edited_at = timezone.now()
    wait_for(
        lambda: runs_after(edited_at) >= 3 * scale, timeout=20 * scale, what="runs after the edit"
    )

    doomed.kill_tree()  # SIGKILL, maybe in the middle of a claim
    killed_at = timezone.now()
    wait_for(
        lambda: runs_after(killed_at, claimed_by="beat-b") >= 3 * scale,
        timeout=20 * scale,
        what="survivor runs",
    )

    PeriodicTask.objects.filter(pk=job.pk).update(enabled=False)  # as the admin's action does
    disabled_at = timezone.now()
    time.sleep(2.5)  # a negative check: nothing may be sent after BEAT_MAX_LOOP_INTERVAL (1 s)
    assert survivor.stop() == 0

    runs = list(PeriodicTaskRun.objects.order_by("scheduled_for"))
    assert all(run.sent_at is not None for run in runs)
    assert max(run.claimed_at for run in runs) <= disabled_at + SECOND
    assert {run.claimed_by for run in runs if run.claimed_at > killed_at} == {"beat-b"}
    # None missed: consecutive runs are exactly one interval apart, 1 s before the edit, 2 s after.
    gaps = [later.scheduled_for - earlier.scheduled_for for earlier, later in pairwise(runs)]
    switch = next(i for i, gap in enumerate(gaps) if gap != SECOND)
    assert set(gaps[:switch]) == {SECOND} and set(gaps[switch:]) == {2 * SECOND}, gaps
    assert runs[switch + 1].scheduled_for > edited_at - SECOND
    # Exactly once: one execution (a row the task wrote) per run, with the run's task id.
    wait_for(lambda: Execution.objects.count() >= len(runs), timeout=20, what="executions")
    executed = list(Execution.objects.values_list("task_id", flat=True))
    assert sorted(executed) == sorted(run.task_id for run in runs)
    labels = dict(Execution.objects.values_list("task_id", "label"))
    assert {labels[run.task_id] for run in runs[switch + 1 :]} == {"edited"}
    job.refresh_from_db()
    assert job.total_run_count == len(runs) and job.last_run_at == runs[-1].scheduled_for


def test_beat_stops_at_sigterm(start_beat: Any) -> None:
    beat = start_beat()
    beat.signal(signal.SIGTERM)
    assert beat.process.wait(10) == 0
    assert "stopped" in beat.output()


def test_the_worker_can_embed_beat(settings: Any, start_worker: Any) -> None:
    settings.TQ = {**settings.TQ, "BEAT_MAX_LOOP_INTERVAL": 1}
    PeriodicTask.objects.create(
        name="embedded", task=RECORD, interval=every(1), kwargs={"label": "embedded"}
    )
    worker = start_worker("-P", "threads", "-c", "2", "--beat")
    wait_for(lambda: Execution.objects.filter(label="embedded").count() >= 3, timeout=20)
    assert worker.stop() == 0
    assert "Beat " in worker.output() and "ready" in worker.output()


def test_a_bad_declaration_stops_beat_with_a_clear_error(settings: Any, start_beat: Any) -> None:
    settings.TQ = {**settings.TQ, "BEAT_SCHEDULE": {"broken": {"task": RECORD}}}
    beat = start_beat(ready=False)
    assert beat.process.wait(20) == 1
    assert "CommandError: TQ['BEAT_SCHEDULE']['broken'] needs 'task'" in beat.output()
