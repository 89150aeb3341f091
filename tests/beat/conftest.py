"""Helpers for the beat tests: periodic tasks created "in the past", and beat subprocesses."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from django_tq.models import PeriodicTask
from django_tq.models.schedules import row_for
from django_tq.schedules import Schedule, to_schedule
from django_tq.testing import CapturedQueue, capture
from tests.conftest import WorkerProcess, stop_all, worker_env

UTC = dt.UTC
RECORD = "tests.testapp.tasks.record"


def utc(text: str) -> dt.datetime:
    """Return an aware UTC datetime from ``YYYY-MM-DD HH:MM[:SS]``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule_fields(value: Schedule) -> dict[str, Any]:
    """Return the schedule foreign key of a periodic task running on ``value``."""
    row = row_for(value)
    return {row.periodic_task_field: row}


def make_task(
    schedule: Any,
    *,
    name: str = "job",
    created: dt.datetime,
    task: str = RECORD,
    **fields: Any,
) -> PeriodicTask:
    """Create a periodic task as if it had been created (and last edited) at ``created``."""
    periodic_task = PeriodicTask.objects.create(
        name=name, task=task, **schedule_fields(to_schedule(schedule)), **fields
    )
    PeriodicTask.objects.filter(pk=periodic_task.pk).update(
        date_created=created, date_changed=created
    )
    periodic_task.refresh_from_db()
    return periodic_task


@pytest.fixture
def queue() -> Iterator[CapturedQueue]:
    """Capture what beat sends instead of publishing it."""
    with capture() as captured:
        yield captured


class BeatProcess(WorkerProcess):
    """A ``manage.py tqbeat`` subprocess against the test database."""

    command = "tqbeat"


@pytest.fixture
def start_beat(tmp_path: Path) -> Iterator[Callable[..., BeatProcess]]:
    """Start ``tqbeat`` subprocesses with the test's current settings; all stop at the end."""
    beats: list[BeatProcess] = []

    def start(*args: str, ready: bool = True) -> BeatProcess:
        beat = BeatProcess(list(args), worker_env(), tmp_path / f"beat-{len(beats)}.log")
        beats.append(beat)
        return beat.wait_ready() if ready else beat

    yield start
    stop_all(beats)
    for index, beat in enumerate(beats):
        print(f"--- beat {index} output ---\n{beat.output()[-5000:]}")
