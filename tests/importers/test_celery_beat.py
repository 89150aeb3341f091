"""``tqimport celery-beat``: django-celery-beat's periodic tasks, made through its own models,
imported through its models and through plain SQL on its tables; run again, dry runs, edits on
either side, and what beat then sends."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from django_tq.beat.scheduler import Scheduler
from django_tq.importers import celery_beat
from django_tq.importers.report import Action, Report
from django_tq.models import (
    ClockedSchedule,
    CrontabSchedule,
    ImportedPeriodicTask,
    IntervalSchedule,
    PeriodicTask,
)
from django_tq.registry import registry
from django_tq.schedules import Clocked, Crontab, Every
from django_tq.sun import Solar
from django_tq.testing import capture
from tests.importers.conftest import celery_model

pytestmark = [pytest.mark.db, pytest.mark.django_version]

UTC = dt.UTC
ADD = "tests.testapp.tasks.add"
RECORD = "tests.testapp.tasks.record"
PARIS = ZoneInfo("Europe/Paris")


def dcb(name: str) -> Any:
    return celery_model("django_celery_beat", name)


def interval(every: int, period: str) -> Any:
    return dcb("IntervalSchedule").objects.create(every=every, period=period)


def crontab(**fields: Any) -> Any:
    return dcb("CrontabSchedule").objects.create(**fields)


def periodic(name: str, task: str = RECORD, **fields: Any) -> Any:
    if not {"interval", "crontab", "clocked", "solar"} & fields.keys():
        fields["interval"] = interval(15, "minutes")
    return dcb("PeriodicTask").objects.create(name=name, task=task, **fields)


def outcomes(report: Report) -> dict[str, tuple[Action, str]]:
    """Return each row's action and its reason and notes, by name."""
    return {
        row.key: (row.action, "; ".join(filter(None, (row.reason, *row.notes))))
        for row in report.rows
    }


LAST_RUN = dt.datetime(2024, 5, 31, 7, 30, tzinfo=UTC)


def make_everything() -> None:
    """One row of each kind the import must handle."""
    periodic(
        "add every 15 minutes",
        ADD,
        args="[2, 3]",
        queue="math",
        priority=7,
        headers='{"source": "beat"}',
        description="adds two numbers",
        last_run_at=LAST_RUN,
        total_run_count=12,
        start_time=dt.datetime(2024, 1, 1, tzinfo=UTC),
        expire_seconds=60,
    )
    periodic(
        "weekday report",
        crontab=crontab(minute="30", hour="9", day_of_week="mon-fri", timezone="Europe/Paris"),
        kwargs='{"label": "report"}',
        expires=dt.datetime(2031, 1, 1, tzinfo=UTC),
    )
    periodic("quarter hours", crontab=crontab(minute="*/15"), routing_key="io")
    periodic("five seconds", ADD, interval=interval(5_000_000, "microseconds"), args="[1, 1]")
    periodic("too fine", ADD, interval=interval(1500, "microseconds"), args="[1, 1]")
    clocked = dcb("ClockedSchedule").objects.create(
        clocked_time=dt.datetime(2030, 1, 1, 12, tzinfo=UTC)
    )
    periodic("new year", clocked=clocked, one_off=True)
    sunset = dcb("SolarSchedule").objects.create(event="sunset", latitude=48.85, longitude=2.35)
    periodic("at sunset", solar=sunset)
    periodic(
        "celery.backend_cleanup",
        "celery.backend_cleanup",
        crontab=crontab(minute="0", hour="4"),
    )
    periodic("gone", "proj.tasks.gone")
    periodic("broadcast", exchange="everyone")
    periodic("urgent", priority=200)
    periodic("paused", enabled=False)
    periodic("sundays", crontab=crontab(minute="0", hour="0", day_of_week="7"))
    periodic("bad args", ADD, args="[2,")
    periodic("wrong args", ADD, args="[1, 2, 3]")


@pytest.mark.django_db
def test_every_row_is_imported_skipped_or_failed_with_its_reason(
    celery_apps: Callable[[], Any], read_via: Callable[..., Any]
) -> None:
    with celery_apps():
        make_everything()
    report = read_via(celery_beat.import_periodic_tasks)
    found = outcomes(report)
    assert {name for name, (action, _) in found.items() if action == Action.IMPORTED} == {
        "add every 15 minutes", "weekday report", "quarter hours", "five seconds", "new year",
        "gone", "broadcast", "urgent", "paused", "wrong args", "at sunset",
    }  # fmt: skip
    assert found["too fine"] == (
        Action.SKIPPED,
        "an interval of 1,500 microseconds: django_tq's intervals are whole seconds; create "
        "this one by hand with the nearest number of seconds",
    )
    assert found["celery.backend_cleanup"] == (
        Action.SKIPPED,
        "Celery's result cleanup task: django_tq's worker deletes expired results itself "
        "(TQ['RESULT_EXPIRES'])",
    )
    assert found["sundays"] == (
        Action.FAILED,
        "crontab day_of_week '7': Invalid end range: 7 > 6. (Celery cannot read it, so "
        "django-celery-beat never ran it)",
    )
    assert found["bad args"][0] == Action.FAILED
    assert found["bad args"][1].startswith("args is not valid JSON")
    assert found["gone"][1] == (
        "imported disabled: task 'proj.tasks.gone' is not registered in this project"
    )
    assert found["broadcast"][1] == (
        "imported disabled: Exchange 'everyone' is not declared: no queue of TQ['QUEUES'] is "
        "bound to it, so routing key 'default' reaches no queue"
    )
    assert found["wrong args"][1].startswith("imported disabled: These arguments do not fit")
    assert found["urgent"][1] == "priority 200 stored as 9, django_tq's highest"
    assert found["quarter hours"][1] == ""  # a key naming its queue, on the default exchange
    assert report.count(Action.IMPORTED) == 11 and report.total == 15

    job = PeriodicTask.objects.get(name="add every 15 minutes")
    assert job.get_schedule() == Every(dt.timedelta(minutes=15))
    assert (job.task, job.args, job.kwargs, job.queue, job.priority) == (ADD, [2, 3], {}, "math", 7)
    assert job.headers == {"source": "beat"} and job.description == "adds two numbers"
    assert job.last_run_at == LAST_RUN and job.total_run_count == 12
    assert job.start_time == dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert job.expire_seconds == 60 and job.expires is None
    assert job.enabled and not job.one_off and not job.code_managed

    report_job = PeriodicTask.objects.get(name="weekday report")
    assert report_job.get_schedule() == Crontab(
        minute="30", hour="9", day_of_week="mon-fri", timezone="Europe/Paris"
    )
    assert report_job.kwargs == {"label": "report"}
    assert report_job.expires == dt.datetime(2031, 1, 1, tzinfo=UTC)
    # Saturday 1 June 2024, 12:00 in Paris: next Monday and Tuesday at 09:30 Paris (07:30 UTC)
    saturday = dt.datetime(2024, 6, 1, 12, tzinfo=PARIS)
    runs = report_job.get_schedule().iter_after(saturday, since=saturday)
    assert [next(runs), next(runs)] == [
        dt.datetime(2024, 6, 3, 7, 30, tzinfo=UTC),
        dt.datetime(2024, 6, 4, 7, 30, tzinfo=UTC),
    ]
    quarter = PeriodicTask.objects.get(name="quarter hours")
    assert quarter.get_schedule() == Crontab(minute="*/15", timezone="UTC")
    assert (quarter.queue, quarter.exchange, quarter.routing_key) == ("", "", "io")
    assert quarter.enabled and quarter.routing_problem() is None
    assert PeriodicTask.objects.get(name="five seconds").get_schedule() == Every(
        dt.timedelta(seconds=5)
    )
    new_year = PeriodicTask.objects.get(name="new year")
    assert new_year.get_schedule() == Clocked(dt.datetime(2030, 1, 1, 12, tzinfo=UTC))
    assert new_year.one_off
    at_sunset = PeriodicTask.objects.get(name="at sunset")
    assert at_sunset.get_schedule() == Solar(
        event="sunset", latitude=Decimal("48.85"), longitude=Decimal("2.35")
    )
    assert at_sunset.solar is not None and at_sunset.solar.latitude == Decimal("48.850000")
    assert not PeriodicTask.objects.get(name="gone").enabled
    assert not PeriodicTask.objects.get(name="broadcast").enabled
    assert not PeriodicTask.objects.get(name="paused").enabled
    assert PeriodicTask.objects.get(name="urgent").priority == 9
    assert set(ImportedPeriodicTask.objects.values_list("source_name", flat=True)) == set(
        PeriodicTask.objects.values_list("name", flat=True)
    )


@pytest.mark.django_db
def test_a_second_run_changes_nothing_and_says_so(
    celery_apps: Callable[[], Any], read_via: Callable[..., Any]
) -> None:
    with celery_apps():
        make_everything()
    read_via(celery_beat.import_periodic_tasks)
    changed = {name: task.date_changed for name, task in _tasks().items()}
    again = read_via(celery_beat.import_periodic_tasks)
    assert not again.changed_anything
    assert again.count(Action.UNCHANGED) == 11
    assert again.count(Action.SKIPPED) == 2 and again.count(Action.FAILED) == 2
    assert {name: task.date_changed for name, task in _tasks().items()} == changed


def _tasks() -> dict[str, PeriodicTask]:
    return {task.name: task for task in PeriodicTask.objects.all()}


@pytest.mark.django_db
def test_a_dry_run_writes_nothing(celery_apps: Callable[[], Any]) -> None:
    with celery_apps():
        make_everything()
        out = io.StringIO()
        with pytest.raises(CommandError, match="2 row"):  # the two rows that fail
            call_command("tqimport", "celery-beat", "--dry-run", stdout=out)
    text = out.getvalue()
    assert (
        "Dry run, nothing written: celery-beat: 15 periodic tasks: 11 imported, 0 updated, "
        "0 unchanged, 2 skipped, 2 failed." in text
    )
    assert "imported   weekday report" in text
    assert not PeriodicTask.objects.exists() and not ImportedPeriodicTask.objects.exists()
    assert not IntervalSchedule.objects.exists() and not CrontabSchedule.objects.exists()
    assert not ClockedSchedule.objects.exists()


@pytest.mark.django_db
def test_the_command_reports_each_row_and_then_nothing_to_do(
    celery_apps: Callable[[], Any],
) -> None:
    with celery_apps():
        periodic("nightly", crontab=crontab(minute="0", hour="3"))
        periodic("celery.backend_cleanup", "celery.backend_cleanup")
    out = io.StringIO()
    call_command("tqimport", "celery-beat", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "Reading django-celery-beat through plain SQL (table django_celery_beat_periodictask; "
        "django_celery_beat is not installed)."
    )
    assert lines[1] == "  imported   nightly"
    assert lines[2].startswith("  skipped    celery.backend_cleanup — Celery's result cleanup")
    assert lines[3] == (
        "celery-beat: 2 periodic tasks: 1 imported, 0 updated, 0 unchanged, 1 skipped, 0 failed."
    )
    out = io.StringIO()
    call_command("tqimport", "celery-beat", stdout=out)
    assert out.getvalue().splitlines()[-2:] == [
        "celery-beat: 2 periodic tasks: 0 imported, 0 updated, 1 unchanged, 1 skipped, 0 failed.",
        "celery-beat: nothing to do: every row was imported before or is skipped.",
    ]


@pytest.mark.django_db
def test_changes_there_are_applied_and_edits_here_kept(
    celery_apps: Callable[[], Any], read_via: Callable[..., Any]
) -> None:
    with celery_apps():
        source = periodic("job", ADD, args="[1, 2]", last_run_at=LAST_RUN, total_run_count=3)
    read_via(celery_beat.import_periodic_tasks)
    ours = PeriodicTask.objects.get(name="job")
    ours.description = "edited here"
    ours.last_run_at = LAST_RUN + dt.timedelta(hours=1)  # django_tq's beat ran it since
    ours.total_run_count = 7
    ours.save()
    with celery_apps():  # meanwhile Celery's beat ran it too, and someone changed its arguments
        source.args = "[5, 6]"
        source.last_run_at = LAST_RUN + dt.timedelta(minutes=15)
        source.total_run_count = 4
        source.crontab = crontab(minute="*/5")
        source.interval = None
        source.save()
    (row,) = read_via(celery_beat.import_periodic_tasks).rows
    assert row.action == Action.UPDATED
    assert row.notes == ("changed: schedule, args",)
    ours.refresh_from_db()
    assert ours.args == [5, 6] and ours.get_schedule() == Crontab(minute="*/5", timezone="UTC")
    assert ours.description == "edited here"
    assert ours.last_run_at == LAST_RUN + dt.timedelta(hours=1)  # never moves back
    assert ours.total_run_count == 7
    assert read_via(celery_beat.import_periodic_tasks).rows[0].action == Action.UNCHANGED


@pytest.mark.django_db
def test_a_task_registered_later_is_enabled_by_the_next_import(
    celery_apps: Callable[[], Any],
) -> None:
    with celery_apps():
        periodic("adder", ADD, args="[1, 2]")
    task = registry.get(ADD)
    registry.unregister(ADD)
    try:
        (first,) = celery_beat.import_periodic_tasks().rows
    finally:
        registry.register(task)
    assert first.notes == (f"imported disabled: task {ADD!r} is not registered in this project",)
    assert not PeriodicTask.objects.get(name="adder").enabled
    (second,) = celery_beat.import_periodic_tasks().rows
    assert (second.action, second.notes) == (Action.UPDATED, ("changed: enabled",))
    assert PeriodicTask.objects.get(name="adder").enabled


FEEDS = {
    "default": {},
    "feed_tasks": {"exchange": "feeds", "exchange_type": "topic", "routing_key": "feed.#"},
}


@pytest.mark.django_db
def test_an_exchange_and_routing_key_are_kept_and_beat_sends_through_them(
    celery_apps: Callable[[], Any], read_via: Callable[..., Any], settings: Any
) -> None:
    settings.TQ = {**settings.TQ, "QUEUES": FEEDS}
    with celery_apps():
        periodic("import feeds", exchange="feeds", routing_key="feed.import", queue="feed_tasks")
        periodic("key only", exchange="feeds", routing_key="feed.export")
        periodic("nowhere", exchange="feeds", routing_key="orders.new")
    found = outcomes(read_via(celery_beat.import_periodic_tasks))
    assert found["import feeds"] == (Action.IMPORTED, "")
    assert found["key only"] == (Action.IMPORTED, "")
    assert found["nowhere"] == (
        Action.IMPORTED,
        "imported disabled: Routing key 'orders.new' on exchange 'feeds' (topic) reaches no "
        "queue declared in TQ['QUEUES']",
    )
    feeds = PeriodicTask.objects.get(name="import feeds")
    assert (feeds.queue, feeds.exchange, feeds.routing_key, feeds.enabled) == (
        "feed_tasks", "feeds", "feed.import", True,
    )  # fmt: skip
    assert not PeriodicTask.objects.get(name="nowhere").enabled
    beat = Scheduler(name="beat-test", max_interval=5, grace=dt.timedelta(seconds=10))
    PeriodicTask.objects.update(date_created=LAST_RUN, date_changed=LAST_RUN)
    with capture() as queue:
        assert len(beat.tick(LAST_RUN + dt.timedelta(minutes=15))) == 2
    assert sorted((m.queue, m.exchange, m.routing_key) for m in queue.messages) == [
        ("feed_tasks", "feeds", "feed.export"),
        ("feed_tasks", "feeds", "feed.import"),
    ]


@pytest.mark.django_db
def test_an_exchange_declared_later_is_enabled_by_the_next_import(
    celery_apps: Callable[[], Any], settings: Any
) -> None:
    with celery_apps():
        periodic("import feeds", exchange="feeds", routing_key="feed.import")
    (first,) = celery_beat.import_periodic_tasks().rows
    assert first.notes[0].startswith("imported disabled: Exchange 'feeds' is not declared")
    assert not PeriodicTask.objects.get(name="import feeds").enabled
    settings.TQ = {**settings.TQ, "QUEUES": FEEDS}
    (second,) = celery_beat.import_periodic_tasks().rows
    assert (second.action, second.notes) == (Action.UPDATED, ("changed: enabled",))
    assert PeriodicTask.objects.get(name="import feeds").enabled


@pytest.mark.django_db
def test_a_task_imported_before_exchanges_were_kept_takes_them_at_the_next_import(
    celery_apps: Callable[[], Any], settings: Any
) -> None:
    """A record of an earlier version has no exchange or routing key: the next run adds them."""
    settings.TQ = {**settings.TQ, "QUEUES": FEEDS}
    with celery_apps():
        periodic("import feeds", exchange="feeds", routing_key="feed.import")
    celery_beat.import_periodic_tasks()
    record = ImportedPeriodicTask.objects.get(source_name="import feeds")
    old = {
        key: value for key, value in record.values.items() if key not in ("exchange", "routing_key")
    }
    ImportedPeriodicTask.objects.filter(pk=record.pk).update(values={**old, "enabled": False})
    PeriodicTask.objects.filter(name="import feeds").update(
        exchange="", routing_key="", enabled=False
    )
    (row,) = celery_beat.import_periodic_tasks().rows
    assert (row.action, row.notes) == (Action.UPDATED, ("changed: exchange, routing_key, enabled",))
    task = PeriodicTask.objects.get(name="import feeds")
    assert (task.exchange, task.routing_key, task.enabled) == ("feeds", "feed.import", True)


@pytest.mark.django_db
def test_tasks_of_this_project_are_never_taken_over(celery_apps: Callable[[], Any]) -> None:
    with celery_apps():
        for name in ("made here", "in code", "deleted here"):
            periodic(name)
    every = IntervalSchedule.for_schedule(Every(dt.timedelta(hours=1)))
    PeriodicTask.objects.create(name="made here", task=ADD, interval=every, args=[1, 1])
    PeriodicTask.objects.create(name="in code", task=ADD, interval=every, code_managed=True)
    celery_beat.import_periodic_tasks()
    PeriodicTask.objects.get(name="deleted here").delete()
    found = outcomes(celery_beat.import_periodic_tasks())
    assert found["made here"] == (
        Action.SKIPPED,
        "a periodic task of this name was created here: rename one of them",
    )
    assert found["in code"] == (
        Action.SKIPPED,
        "declared in code here (TQ['BEAT_SCHEDULE'] or @periodic_task): the code wins",
    )
    assert found["deleted here"][0] == Action.SKIPPED
    assert found["deleted here"][1].startswith("imported on ")
    assert PeriodicTask.objects.get(name="made here").args == [1, 1]
    assert not PeriodicTask.objects.filter(name="deleted here").exists()


@pytest.mark.django_db
def test_a_task_deleted_in_celery_beat_is_left_here_and_named(
    celery_apps: Callable[[], Any],
) -> None:
    with celery_apps():
        periodic("kept")
        periodic("dropped there")
    celery_beat.import_periodic_tasks()
    with celery_apps():
        dcb("PeriodicTask").objects.filter(name="dropped there").delete()
    report = celery_beat.import_periodic_tasks()
    assert report.warnings == [
        "1 periodic task(s) imported earlier are no longer in django-celery-beat; they are left "
        "as they are here: dropped there."
    ]
    assert PeriodicTask.objects.filter(name="dropped there").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("order", "expected"), [("amqp", [0, 5, 9]), ("redis", [9, 4, 0])])
def test_priorities_follow_what_they_meant_to_celerys_broker(
    celery_apps: Callable[[], Any], order: str, expected: list[int]
) -> None:
    with celery_apps():
        for priority in (0, 5, 9):
            periodic(f"p{priority}", priority=priority)
    call_command("tqimport", "celery-beat", "--celery-broker", order, stdout=io.StringIO())
    assert [PeriodicTask.objects.get(name=f"p{p}").priority for p in (0, 5, 9)] == expected


@pytest.mark.django_db
def test_an_imported_crontab_is_sent_by_beat_at_its_time_in_its_zone(
    celery_apps: Callable[[], Any],
) -> None:
    with celery_apps():
        periodic(
            "weekday report",
            crontab=crontab(minute="30", hour="9", day_of_week="mon-fri", timezone="Europe/Paris"),
            kwargs='{"label": "report"}',
            queue="reports",
        )
    celery_beat.import_periodic_tasks()
    now = timezone.now()
    local = now.astimezone(PARIS)
    # the next weekday 09:30 in Paris after now (today's, when it is still to come)
    day = local.date() + dt.timedelta(days=0 if local.time() < dt.time(9, 29) else 1)
    while day.isoweekday() > 5:
        day += dt.timedelta(days=1)
    due = dt.datetime.combine(day, dt.time(9, 30), tzinfo=PARIS).astimezone(UTC)
    beat = Scheduler(name="beat-test", max_interval=5, grace=dt.timedelta(seconds=10))
    with capture() as queue:
        assert beat.tick(due - dt.timedelta(seconds=1)) == []
        (sent,) = beat.tick(due)
    assert sent.scheduled_for == due
    (message,) = queue.messages
    assert (message.task, message.kwargs, message.queue) == (RECORD, {"label": "report"}, "reports")


@pytest.mark.django_db
def test_no_tables_is_said_plainly(celery_tables: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(celery_beat, "APP", "celery_beat_elsewhere")
    with pytest.raises(CommandError) as error:
        call_command("tqimport", "celery-beat", stdout=io.StringIO())
    assert str(error.value) == (
        "No django-celery-beat periodic tasks in database 'default': its table "
        "celery_beat_elsewhere_periodictask does not exist there (celery_beat_elsewhere is not "
        "installed, so the table was looked up). Pass --database to read another database."
    )
    with pytest.raises(CommandError, match="Unknown database alias 'nowhere'"):
        call_command("tqimport", "celery-beat", "--database", "nowhere")


@pytest.mark.django_db
def test_an_empty_table_is_said_plainly(celery_tables: None) -> None:
    err = io.StringIO()
    call_command("tqimport", "celery-beat", stdout=io.StringIO(), stderr=err)
    assert err.getvalue() == "django_celery_beat_periodictask has no rows: nothing to import.\n"
