"""Code-declared schedules: ``TQ["BEAT_SCHEDULE"]`` and ``@periodic_task`` synced into the tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_tq import crontab, periodic_task, solar
from django_tq.beat.declarations import forget_decorated
from django_tq.beat.sync import sync_declared
from django_tq.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from django_tq.registry import registry
from tests.beat.conftest import RECORD

pytestmark = [pytest.mark.django_db, pytest.mark.db]

SCHEDULE = {
    "nightly": {
        "task": RECORD,
        "schedule": crontab(minute=0, hour=3, timezone="Europe/Paris"),
        "kwargs": {"label": "nightly"},
        "options": {"queue": "reports", "priority": 3, "expires": 600},
        "description": "The nightly report.",
    },
    "every-30s": {"task": RECORD, "schedule": 30, "misfire_policy": "skip"},
    "at-dusk": {"task": RECORD, "schedule": solar("dusk_civil", 48.8566, 2.3522)},
    "hourly": {
        "task": "tests.testapp.tasks.add",
        "schedule": dt.timedelta(hours=1),
        "args": [1, 2],
    },
}


@pytest.fixture
def beat_schedule(settings: Any) -> dict[str, Any]:
    settings.TQ = {**settings.TQ, "BEAT_SCHEDULE": dict(SCHEDULE)}
    return settings.TQ


def test_declared_tasks_are_created_code_managed(beat_schedule: dict[str, Any]) -> None:
    report = sync_declared()
    assert sorted(report.created) == ["at-dusk", "every-30s", "hourly", "nightly"]
    nightly = PeriodicTask.objects.get(name="nightly")
    assert nightly.code_managed and nightly.enabled
    assert nightly.crontab == CrontabSchedule.objects.get(
        hour="3", minute="0", timezone="Europe/Paris"
    )
    assert (nightly.queue, nightly.priority, nightly.expire_seconds) == ("reports", 3, 600)
    assert nightly.kwargs == {"label": "nightly"} and nightly.description == "The nightly report."
    every = PeriodicTask.objects.get(name="every-30s")
    assert every.interval == IntervalSchedule.objects.get(every=30, period="seconds")
    assert every.misfire_policy == "skip"
    assert PeriodicTask.objects.get(name="hourly").interval.period == "hours"
    dusk = PeriodicTask.objects.get(name="at-dusk")
    assert dusk.solar is not None and (dusk.solar.event, str(dusk.solar.latitude)) == (
        "dusk_civil",
        "48.856600",
    )


def test_a_second_sync_changes_nothing(beat_schedule: dict[str, Any]) -> None:
    sync_declared()
    before = dict(PeriodicTask.objects.values_list("name", "date_changed"))
    report = sync_declared()
    assert (report.created, report.updated, report.deleted) == ((), (), ())
    assert dict(PeriodicTask.objects.values_list("name", "date_changed")) == before


def test_changes_in_code_update_and_removals_delete(
    beat_schedule: dict[str, Any], settings: Any
) -> None:
    sync_declared()
    changed = {**SCHEDULE, "hourly": {**SCHEDULE["hourly"], "args": [5, 6]}}
    del changed["every-30s"]
    settings.TQ = {**settings.TQ, "BEAT_SCHEDULE": changed}
    report = sync_declared()
    assert report.updated == ("hourly",) and report.deleted == ("every-30s",)
    assert PeriodicTask.objects.get(name="hourly").args == [5, 6]


def test_a_task_paused_in_the_admin_stays_paused(beat_schedule: dict[str, Any]) -> None:
    sync_declared()
    PeriodicTask.objects.filter(name="nightly").update(enabled=False)
    sync_declared()
    assert not PeriodicTask.objects.get(name="nightly").enabled


def test_a_task_created_in_the_admin_is_left_alone(beat_schedule: dict[str, Any]) -> None:
    admin_made = PeriodicTask.objects.create(
        name="hourly",
        task=RECORD,
        interval=IntervalSchedule.objects.create(every=5, period="minutes"),
    )
    report = sync_declared()
    assert report.skipped == ("hourly",)
    admin_made.refresh_from_db()
    assert not admin_made.code_managed and admin_made.interval.every == 5


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"task": RECORD, "schedule": 30, "every": 5}, "unknown key"),
        ({"task": RECORD}, "needs 'task'"),
        ({"task": RECORD, "schedule": "daily"}, "schedule"),
        ({"task": RECORD, "schedule": 0.5}, "whole number of seconds"),
        ({"task": RECORD, "schedule": 30, "options": {"retry": True}}, "options"),
        ({"task": RECORD, "schedule": 30, "misfire_policy": "later"}, "misfire_policy"),
        ({"task": RECORD, "schedule": 30, "args": [dt.date(2024, 1, 1)]}, "plain JSON"),
        ({"task": "tests.testapp.tasks.add", "schedule": 30, "args": [1]}, "do not fit"),
    ],
)
def test_bad_declarations_fail_loudly(settings: Any, entry: dict[str, Any], message: str) -> None:
    settings.TQ = {**settings.TQ, "BEAT_SCHEDULE": {"bad": entry}}
    with pytest.raises(ImproperlyConfigured, match=message):
        sync_declared()


@pytest.fixture
def decorated() -> Iterator[str]:
    @periodic_task(run_every=dt.timedelta(minutes=5), kwargs={"n": 1}, queue="io")
    def refresh_cache(n: int) -> int:
        """Refresh the cache."""
        return n

    yield refresh_cache.name
    registry.unregister(refresh_cache.name)
    forget_decorated(refresh_cache.name)


def test_periodic_task_declares_a_task_and_its_schedule(decorated: str) -> None:
    assert decorated in registry
    assert registry.get(decorated).queue == "io"
    sync_declared()
    row = PeriodicTask.objects.get(name=decorated)
    assert row.task == decorated and row.code_managed and row.kwargs == {"n": 1}
    assert row.interval.every == 5 and row.description == "Refresh the cache."


def test_a_name_declared_twice_is_an_error(decorated: str, settings: Any) -> None:
    settings.TQ = {**settings.TQ, "BEAT_SCHEDULE": {decorated: {"task": RECORD, "schedule": 1}}}
    with pytest.raises(ImproperlyConfigured, match="both"):
        sync_declared()
