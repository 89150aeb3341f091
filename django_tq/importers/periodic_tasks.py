"""Imported periodic tasks written into django_tq's, and written again only where the source changed.

An importer describes each source row as :class:`PlannedTask` values (JSON data, the form
:class:`~django_tq.models.ImportedPeriodicTask` records) and :func:`write` applies them:

* no record and no task of that name here: the task is created and recorded (``imported``);
* a task of that name created here, in the admin or in code: never taken over (``skipped``);
* recorded, and the source's values are the ones recorded: nothing is written (``unchanged``),
  whatever was edited here since;
* recorded, and some values changed at the source since: those are applied, edits made here to
  the others are kept (``updated``); a last run and a run count only move forward, so an import
  after django_tq's beat ran a task never makes it run again;
* recorded, and the task was deleted here since: not created again (``skipped``).

A value is one key of :data:`VALUE_KEYS`, read and set as the ``PeriodicTask`` attribute of the
same name (``schedule`` excepted): a field added to both is compared and copied with no other
change here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from django_tq.importers.report import Action, Invalid, RowOutcome
from django_tq.models import ImportedPeriodicTask, PeriodicTask
from django_tq.models.schedules import row_for
from django_tq.schedules import CRONTAB_FIELDS, Clocked, Crontab, Every, Schedule
from django_tq.sun import Solar

KIND = "periodic task"
#: the values an import compares, in the form :class:`ImportedPeriodicTask` records them
VALUE_KEYS = (
    "task", "schedule", "args", "kwargs", "headers", "queue", "exchange", "routing_key",
    "priority", "enabled", "one_off", "start_time", "expires", "expire_seconds", "description",
    "last_run_at", "total_run_count",
)  # fmt: skip
DATETIME_KEYS = ("start_time", "expires", "last_run_at")
#: values that only move forward (the later of the two is kept)
RUN_STATE = ("last_run_at", "total_run_count")


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannedTask:
    """What a source row becomes here: its values (JSON data keyed by VALUE_KEYS) and remarks."""

    values: dict[str, Any]  #: JSON data, keyed by VALUE_KEYS
    notes: tuple[str, ...] = ()


def moment(value: dt.datetime | None) -> str | None:
    """Return an instant as recorded: ISO 8601 in UTC."""
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def solar_values(schedule: Solar) -> dict[str, str]:
    """Return a solar schedule as recorded: its event and place as written (``"48.85"``)."""
    return {
        "event": schedule.event,
        "latitude": format(schedule.latitude.normalize(), "f"),
        "longitude": format(schedule.longitude.normalize(), "f"),
    }


def _schedule_value(recorded: dict[str, Any]) -> Schedule:
    """Return the schedule a recorded one stands for: ``{"interval": seconds}``,
    ``{"crontab": {fields…, "timezone": zone}}``, ``{"solar": {"event": …, "latitude": "48.85",
    "longitude": "2.35"}}`` or ``{"clocked": ISO 8601}``."""
    if "interval" in recorded:
        return Every(dt.timedelta(seconds=recorded["interval"]))
    if "crontab" in recorded:
        return Crontab(**recorded["crontab"])
    if "solar" in recorded:
        return Solar(**recorded["solar"])
    return Clocked(dt.datetime.fromisoformat(recorded["clocked"]))


def _schedule_fields(recorded: dict[str, Any]) -> dict[str, Any]:
    """Return the schedule foreign keys of a task on the ``recorded`` schedule (rows created)."""
    row = row_for(_schedule_value(recorded))
    fields: dict[str, Any] = dict.fromkeys(PeriodicTask.SCHEDULE_FIELDS)
    fields[row.periodic_task_field] = row
    return fields


def _recorded_schedule(schedule: Schedule) -> dict[str, Any]:
    """Return a schedule in the form an import records it (see :func:`_schedule_value`)."""
    if isinstance(schedule, Every):
        return {"interval": int(schedule.every.total_seconds())}
    if isinstance(schedule, Crontab):
        fields = {name: getattr(schedule, name) for name in CRONTAB_FIELDS}
        return {"crontab": {**fields, "timezone": schedule.zone_name}}
    if isinstance(schedule, Solar):
        return {"solar": solar_values(schedule)}
    if isinstance(schedule, Clocked):
        return {"clocked": moment(schedule.at)}
    raise ValueError(f"Unsupported schedule {schedule!r}.")


def recorded_values(task: PeriodicTask) -> dict[str, Any]:
    """Return a django_tq periodic task's values in the form an import records them."""
    values = {key: getattr(task, key) for key in VALUE_KEYS if key != "schedule"}
    for key in DATETIME_KEYS:
        values[key] = moment(values[key])
    return {**values, "schedule": _recorded_schedule(task.get_schedule())}


def _apply(task: PeriodicTask, values: dict[str, Any]) -> None:
    """Set recorded ``values`` on ``task`` (schedule rows created as needed) and validate them."""
    for key, value in _schedule_fields(values["schedule"]).items():
        setattr(task, key, value)
    for key in VALUE_KEYS:
        if key == "schedule":
            continue
        value = values[key]
        if key in DATETIME_KEYS and value is not None:
            value = dt.datetime.fromisoformat(value)
        setattr(task, key, value)
    try:
        task.clean_fields()
        task.validate_constraints()
    except ValidationError as exc:
        raise Invalid(
            "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
        ) from None


def _later(key: str, ours: Any, theirs: Any) -> Any:
    """Return the later of two last runs, or the larger of two run counts."""
    if ours is None or theirs is None:
        return theirs if ours is None else ours
    if key == "last_run_at":
        return max(ours, theirs, key=dt.datetime.fromisoformat)
    return max(ours, theirs)


def write(name: str, planned: PlannedTask, alias: str) -> RowOutcome:
    """Create, update or leave the task ``name`` for ``planned``; return what was done."""
    record = (
        ImportedPeriodicTask.objects.using(alias)
        .select_related("periodic_task")
        .filter(source_name=name)
        .first()
    )
    notes = planned.notes
    if record is None:
        existing = PeriodicTask.objects.using(alias).filter(name=name).first()
        if existing is not None:
            reason = (
                "declared in code here (TQ['BEAT_SCHEDULE'] or @periodic_task): the code wins"
                if existing.code_managed
                else "a periodic task of this name was created here: rename one of them"
            )
            return RowOutcome(kind=KIND, key=name, action=Action.SKIPPED, reason=reason)
        new = PeriodicTask(name=name)
        _apply(new, planned.values)
        new.save(force_insert=True, using=alias)
        ImportedPeriodicTask.objects.using(alias).create(
            source_name=name, periodic_task=new, values=planned.values
        )
        return RowOutcome(kind=KIND, key=name, action=Action.IMPORTED, notes=notes)
    task = record.periodic_task
    if task is None:
        return RowOutcome(
            kind=KIND,
            key=name,
            action=Action.SKIPPED,
            reason=f"imported on {record.date_imported:%Y-%m-%d} and deleted here since",
        )
    current = recorded_values(task)
    changed = [key for key in VALUE_KEYS if record.values.get(key) != planned.values[key]]
    target = {**current, **{key: planned.values[key] for key in changed}}
    for key in RUN_STATE:
        target[key] = _later(key, current[key], target[key])
    if changed:
        record.values = planned.values
        record.save(update_fields=["values", "date_updated"], using=alias)
    if target == current:
        return RowOutcome(kind=KIND, key=name, action=Action.UNCHANGED)
    _apply(task, target)
    task.save(using=alias)
    changes = ", ".join(key for key in VALUE_KEYS if target[key] != current[key])
    return RowOutcome(
        kind=KIND, key=name, action=Action.UPDATED, notes=(f"changed: {changes}", *notes)
    )
