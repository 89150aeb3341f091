"""django-celery-beat's periodic tasks, copied into django_tq's (``manage.py tqimport celery-beat``).

Each ``PeriodicTask`` row of django-celery-beat becomes a django_tq ``PeriodicTask`` of the same
name, with its schedule (an interval, a crontab in its own time zone, a solar event or a clocked time),
arguments, headers, queue, priority, expiry, one-off flag, start time, last run and run count.
What cannot be carried over exactly is said, row by row:

* the queue, exchange and routing key are kept, and route each run as Celery's beat did
  (``apply_async(queue=, exchange=, routing_key=)``, see :mod:`django_tq.routing`);
* a task name this project does not register, a routing that reaches no queue here (an exchange
  or a binding ``TQ["QUEUES"]`` does not declare) and arguments that do not fit the task are
  imported *disabled*, with the reason: nothing is lost, nothing runs somewhere unexpected;
* ``celery.backend_cleanup`` is skipped (django_tq's worker deletes expired results itself),
  as are intervals that are not whole seconds;
* rows Celery itself could not run (bad JSON, a crontab its parser rejects) fail.

This module reads and maps the rows; :mod:`django_tq.importers.periodic_tasks` writes them, and
records each with the values copied, so running the import again applies only what changed in
django-celery-beat since, keeps edits made here, never takes over a task created here, and never
moves a last run or a run count back.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, router, transaction

from django_tq.importers import celery_data
from django_tq.importers.celery_crontab import CronParseError, our_crontab_fields
from django_tq.importers.periodic_tasks import KIND, PlannedTask, moment, solar_values, write
from django_tq.importers.report import Action, Invalid, Report, RowOutcome, Skipped
from django_tq.importers.tables import SourceTable
from django_tq.models import ImportedPeriodicTask, PeriodicTask
from django_tq.models.periodic_tasks import ROUTING_FIELDS, routing_problem
from django_tq.registry import registry
from django_tq.schedules import CRONTAB_FIELDS, Crontab, Every
from django_tq.sqlite import write_atomic
from django_tq.sun import Solar

SOURCE = "django-celery-beat"
APP = "django_celery_beat"
#: Celery's own periodic task deleting expired results: django_tq's worker does that itself
CLEANUP_TASK = "celery.backend_cleanup"
#: what a priority number means to the broker Celery used: higher first, or (Redis) 0 first
AMQP, REDIS = "amqp", "redis"
PRIORITY_ORDERS = (AMQP, REDIS)

TASK_COLUMNS = (
    "name", "task", "interval_id", "crontab_id", "solar_id", "clocked_id", "args", "kwargs",
    "headers", "queue", "exchange", "routing_key", "priority", "expires", "expire_seconds",
    "one_off", "start_time", "enabled", "last_run_at", "total_run_count", "description",
)  # fmt: skip
SCHEDULE_TABLES = {
    "interval": ("IntervalSchedule", ("every", "period")),
    "crontab": (
        "CrontabSchedule",
        ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone"),
    ),
    "clocked": ("ClockedSchedule", ("clocked_time",)),
    "solar": ("SolarSchedule", ("event", "latitude", "longitude")),
}
PERIODS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


# -- reading --------------------------------------------------------------------------------------
def _table(model_name: str, alias: str, **conversions: Any) -> SourceTable:
    return SourceTable(
        app_label=APP,
        model_name=model_name,
        table=f"{APP}_{model_name.lower()}",
        alias=alias,
        **conversions,
    )


def read(alias: str) -> tuple[SourceTable, list[dict[str, Any]]]:
    """Return the periodic task table and its rows, each with its schedule row under its kind.

    Raise :class:`SourceMissing` when the table is not in database ``alias``.
    """
    tasks = _table(
        "PeriodicTask",
        alias,
        datetimes=("expires", "start_time", "last_run_at"),
        booleans=("one_off", "enabled"),
    )
    if not tasks.exists():
        raise tasks.missing("django-celery-beat periodic tasks")
    schedules: dict[str, dict[int, dict[str, Any]]] = {}
    for kind, (model_name, columns) in SCHEDULE_TABLES.items():
        table = _table(model_name, alias, datetimes=("clocked_time",))
        schedules[kind] = {row["id"]: row for row in table.rows(columns)} if table.exists() else {}
    rows = tasks.rows(TASK_COLUMNS)
    for row in rows:
        for kind, by_id in schedules.items():
            row[kind] = by_id.get(row[f"{kind}_id"]) if row[f"{kind}_id"] is not None else None
    return tasks, rows


# -- mapping a row ---------------------------------------------------------------------------------
def _interval(row: dict[str, Any]) -> dict[str, Any]:
    every, period = row["every"], row["period"]
    if period == "microseconds":
        if every % 1_000_000:
            raise Skipped(
                f"an interval of {every:,} microseconds: django_tq's intervals are whole "
                "seconds; create this one by hand with the nearest number of seconds"
            )
        every, period = every // 1_000_000, "seconds"
    if period not in PERIODS:
        raise Invalid(f"unknown interval period {period!r}")
    try:
        Every(dt.timedelta(seconds=every * PERIODS[period]))
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return {"interval": every * PERIODS[period]}


def _crontab(row: dict[str, Any]) -> dict[str, Any]:
    try:
        # Celery reads a missing field as "*" (celery.schedules.cronfield)
        fields = our_crontab_fields(
            {key: "*" if row[key] is None else str(row[key]) for key in CRONTAB_FIELDS}
        )
    except CronParseError as exc:
        raise Invalid(
            f"{exc} (Celery cannot read it, so django-celery-beat never ran it)"
        ) from None
    zone = str(row["timezone"] or "UTC")
    try:
        Crontab(**fields, timezone=zone)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return {"crontab": {**fields, "timezone": zone}}


def _degrees(value: Any) -> str:
    """Return a latitude or longitude as written (``48.85``; SQL may read it as a float)."""
    return format(decimal.Decimal(str(value)).normalize(), "f")


def _solar(row: dict[str, Any]) -> dict[str, Any]:
    try:
        schedule = Solar(
            event=str(row["event"]),
            latitude=_degrees(row["latitude"]),  # type: ignore[arg-type]
            longitude=_degrees(row["longitude"]),  # type: ignore[arg-type]
        )
    except (ValueError, decimal.InvalidOperation) as exc:
        raise Invalid(str(exc)) from None
    return {"solar": solar_values(schedule)}


def _schedule(row: dict[str, Any]) -> dict[str, Any]:
    """Return the schedule of a row, as recorded; raise ``Skipped`` or ``Invalid``."""
    kinds = [kind for kind in SCHEDULE_TABLES if row[f"{kind}_id"] is not None]
    if len(kinds) != 1:
        found = " and ".join(kinds) or "none"
        raise Invalid(f"it needs exactly one schedule, it has {found}")
    kind = kinds[0]
    schedule = row[kind]
    if schedule is None:
        raise Invalid(f"its {kind} schedule {row[f'{kind}_id']} does not exist")
    if kind == "solar":
        return _solar(schedule)
    if kind == "interval":
        return _interval(schedule)
    if kind == "crontab":
        return _crontab(schedule)
    return {"clocked": moment(schedule["clocked_time"])}


def _json(row: dict[str, Any], column: str, kind: type, default: Any) -> Any:
    text = row[column]
    if text is None or text == "":
        return default
    try:
        value = celery_data.loads(text)
    except ValueError as exc:
        raise Invalid(f"{column} is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise Invalid(f"{column} is not a JSON {'list' if kind is list else 'object'}: {text}")
    return value


def _route(row: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Return the queue, exchange and routing key, and why the task must be imported disabled.

    They are kept as they are: django-celery-beat passes them to ``apply_async`` and so does
    django_tq's beat, routed against this project's ``TQ["QUEUES"]``. One that reaches no queue
    here (an exchange it does not declare, a key no queue is bound with) disables the task: Celery
    would publish to an exchange RabbitMQ refuses, or one that drops the message.
    """
    options = {field: str(row[field] or "") for field in ROUTING_FIELDS}
    problem = routing_problem(**options)
    return options, [] if problem is None else [problem.rstrip(".")]


def _priority(value: int | None, order: str) -> tuple[int | None, list[str]]:
    """Return django_tq's priority (0-9, 9 first) for Celery's, and a remark if it changed."""
    if value is None:
        return None, []
    if order == REDIS:  # Celery on Redis: 0 runs first, numbers above 9 count as 9
        ours = 9 - min(value, 9)
        return ours, [f"priority {value} (Redis: 0 first) stored as {ours} (9 first)"]
    if value > 9:
        return 9, [f"priority {value} stored as 9, django_tq's highest"]
    return value, []


def plan(row: dict[str, Any], *, priority_order: str = AMQP) -> PlannedTask:
    """Return what a django-celery-beat row becomes here; raise ``Skipped`` or ``Invalid``."""
    if row["task"] == CLEANUP_TASK:
        raise Skipped(
            "Celery's result cleanup task: django_tq's worker deletes expired results itself "
            "(TQ['RESULT_EXPIRES'])"
        )
    schedule = _schedule(row)
    args = _json(row, "args", list, [])
    kwargs = _json(row, "kwargs", dict, {})
    headers = _json(row, "headers", dict, {})
    route, disable = _route(row)
    priority, notes = _priority(row["priority"], priority_order)
    if row["task"] not in registry:
        disable.append(f"task {row['task']!r} is not registered in this project")
    else:
        mismatch = registry.signature_mismatch(row["task"], args, kwargs)
        if mismatch:
            disable.append(mismatch)
    enabled = bool(row["enabled"])
    if disable:
        prefix = "imported disabled" if enabled else "disabled in django-celery-beat; besides"
        notes.insert(0, f"{prefix}: {'; '.join(disable)}")
    start_time, expires = row["start_time"], row["expires"]
    if start_time is not None and expires is not None and expires <= start_time:
        raise Invalid("it expires before it starts, so it never runs")
    values = {
        "task": row["task"],
        "schedule": schedule,
        "args": args,
        "kwargs": kwargs,
        "headers": headers,
        **route,
        "priority": priority,
        "enabled": enabled and not disable,
        "one_off": bool(row["one_off"]),
        "start_time": moment(start_time),
        "expires": moment(expires),
        "expire_seconds": row["expire_seconds"],
        "description": row["description"] or "",
        "last_run_at": moment(row["last_run_at"]),
        "total_run_count": row["total_run_count"] or 0,
    }
    return PlannedTask(values=values, notes=tuple(notes))


# -- writing ---------------------------------------------------------------------------------------
@contextmanager
def _dry_run(alias: str, enabled: bool) -> Iterator[None]:
    """Roll everything back at the end when ``enabled`` (a dry run writes and undoes)."""
    if not enabled:
        yield
        return
    with write_atomic(alias):
        yield
        transaction.set_rollback(True, using=alias)


def import_row(row: dict[str, Any], *, alias: str, priority_order: str = AMQP) -> RowOutcome:
    """Import one django-celery-beat row (read by :func:`read`) into database ``alias``."""
    name = str(row["name"])
    try:
        planned = plan(row, priority_order=priority_order)
        with write_atomic(alias):
            return write(name, planned, alias)
    except Skipped as exc:
        return RowOutcome(kind=KIND, key=name, action=Action.SKIPPED, reason=str(exc))
    except (Invalid, ValueError, TypeError, DatabaseError) as exc:
        return RowOutcome(kind=KIND, key=name, action=Action.FAILED, reason=str(exc))


def import_periodic_tasks(
    *, database: str = "default", dry_run: bool = False, priority_order: str = AMQP
) -> Report:
    """Copy django-celery-beat's periodic tasks from database ``database``; return the report.

    ``dry_run`` writes in a transaction that is rolled back: the report says what would happen.
    Raise :class:`SourceMissing` when django-celery-beat's tables are not there.
    """
    table, rows = read(database)
    report = Report(source=SOURCE, via=table.via, dry_run=dry_run)
    if not rows:
        report.warnings.append(f"{table.table} has no rows: nothing to import.")
    alias = router.db_for_write(PeriodicTask) or "default"
    with _dry_run(alias, dry_run):
        for row in rows:
            report.add(import_row(row, alias=alias, priority_order=priority_order))
    gone = sorted(
        ImportedPeriodicTask.objects.using(alias)
        .filter(periodic_task__isnull=False)
        .exclude(source_name__in=[str(row["name"]) for row in rows])
        .values_list("source_name", flat=True)
    )
    if gone:
        report.warnings.append(
            f"{len(gone)} periodic task(s) imported earlier are no longer in django-celery-beat; "
            f"they are left as they are here: {', '.join(gone)}."
        )
    return report
