"""Beat never exits on a database outage: the start-up sync and every tick retry with back-off
and log one line per outage; a bug still logs its traceback, once per distinct failure."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

import pytest
from django.db import OperationalError

from django_tq.beat import scheduler as scheduler_module
from django_tq.beat.scheduler import Scheduler
from django_tq.models import PeriodicTask
from django_tq.testing import CapturedQueue
from tests.beat.conftest import RECORD, make_task, utc

pytestmark = pytest.mark.django_db

T0 = utc("2024-05-01 12:00")
LOCKED = OperationalError("database is locked")


@pytest.fixture
def beat_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="django_tq.beat")
    return caplog


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "django_tq.beat" and r.levelno == level]


@pytest.mark.django_db(transaction=True)  # a failed attempt closes the connections
def test_start_retries_the_sync_while_the_database_is_locked(
    settings: Any, monkeypatch: pytest.MonkeyPatch, beat_log: pytest.LogCaptureFixture
) -> None:
    settings.TQ = {
        **settings.TQ,
        "BEAT_SCHEDULE": {"every-second": {"task": RECORD, "schedule": 1}},
    }
    attempts: list[int] = []
    real_sync = scheduler_module.sync_declared

    def locked_twice() -> Any:
        attempts.append(1)
        if len(attempts) <= 2:
            raise LOCKED
        return real_sync()

    monkeypatch.setattr(scheduler_module, "sync_declared", locked_twice)
    assert Scheduler(name="beat-a").start() is True
    assert len(attempts) == 3
    assert PeriodicTask.objects.filter(name="every-second", code_managed=True).exists()
    [warning] = _lines(beat_log, logging.WARNING)
    assert "syncing the periodic tasks declared in code failed" in warning.getMessage()
    assert "database is locked" in warning.getMessage() and warning.exc_info is None
    infos = [r.getMessage() for r in _lines(beat_log, logging.INFO)]
    assert any("works again" in line for line in infos)
    assert any("ready" in line for line in infos)


@pytest.mark.django_db(transaction=True)
def test_beat_stopped_during_an_outage_exits_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    def locked() -> Any:
        raise LOCKED

    monkeypatch.setattr(scheduler_module, "sync_declared", locked)
    beat = Scheduler(name="beat-a")
    threading.Timer(0.3, beat.stop).start()
    assert beat.run() == 0


def test_a_bug_at_start_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise TypeError("a bug")

    monkeypatch.setattr(scheduler_module, "sync_declared", broken)
    with pytest.raises(TypeError):
        Scheduler(name="beat-a").start()


@pytest.mark.django_db(transaction=True)
def test_a_failing_tick_backs_off_and_logs_once_per_outage(
    monkeypatch: pytest.MonkeyPatch, beat_log: pytest.LogCaptureFixture
) -> None:
    beat = Scheduler(name="beat-a", max_interval=5)
    real_tick = beat.tick

    def locked(now: dt.datetime) -> Any:
        raise LOCKED

    monkeypatch.setattr(beat, "tick", locked)
    assert [beat.run_tick() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 5.0]
    [warning] = _lines(beat_log, logging.WARNING)
    assert "a tick failed: OperationalError: database is locked" in warning.getMessage()
    assert warning.exc_info is None

    monkeypatch.setattr(beat, "tick", real_tick)
    assert 0 <= beat.run_tick() <= 5
    [info] = _lines(beat_log, logging.INFO)
    assert "a tick works again" in info.getMessage()
    assert "(5 failed attempt(s))" in info.getMessage()


def test_a_broken_periodic_task_logs_once_and_the_others_are_sent(
    monkeypatch: pytest.MonkeyPatch, queue: CapturedQueue, beat_log: pytest.LogCaptureFixture
) -> None:
    make_task(dt.timedelta(minutes=1), name="good", created=T0)
    make_task(dt.timedelta(minutes=1), name="broken", created=T0)
    beat = Scheduler(name="beat-a", max_interval=5, grace=dt.timedelta(seconds=10))
    real_send_due = beat.send_due

    def send_due(periodic_task: PeriodicTask, now: dt.datetime) -> Any:
        if periodic_task.name == "broken":
            raise ValueError("a bug in this task's options")
        return real_send_due(periodic_task, now)

    monkeypatch.setattr(beat, "send_due", send_due)
    for minutes in (1, 2, 3):
        beat.tick(T0 + dt.timedelta(minutes=minutes))
    assert len(queue.messages) == 3  # "good", every minute
    [error] = _lines(beat_log, logging.ERROR)
    assert error.getMessage() == "Periodic task 'broken' failed; retrying with back-off"
    assert error.exc_info is not None and error.exc_info[0] is ValueError


def test_a_database_outage_in_one_task_ends_the_tick(
    monkeypatch: pytest.MonkeyPatch, queue: CapturedQueue
) -> None:
    make_task(dt.timedelta(minutes=1), name="job", created=T0)
    beat = Scheduler(name="beat-a", max_interval=5)

    def locked(periodic_task: PeriodicTask, now: dt.datetime) -> Any:
        raise LOCKED

    monkeypatch.setattr(beat, "send_due", locked)
    with pytest.raises(OperationalError):  # run_tick retries the whole tick
        beat.tick(T0 + dt.timedelta(minutes=1))
