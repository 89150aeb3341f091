"""Write the periodic tasks declared in code into the ``PeriodicTask`` table (at beat start).

Rows written here are marked ``code_managed``. A declared task is created, or updated only when
something differs (so a restart does not count as an edit), except ``enabled``: unless the code
says otherwise, a task paused in the admin stays paused. A code-managed row no longer declared is
deleted. A row of the same name created in the admin is left alone, with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, router

from django_tq.beat.declarations import Declaration, declarations
from django_tq.models import PeriodicTask
from django_tq.models.schedules import row_for
from django_tq.schedules import Schedule
from django_tq.sqlite import write_atomic

logger = logging.getLogger("django_tq.beat")


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncReport:
    """What a sync changed, by periodic task name."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  #: a row of that name exists and is not code-managed


def _schedule_fields(schedule: Schedule) -> dict[str, Any]:
    """Return the schedule foreign key values of a periodic task running on ``schedule``."""
    try:
        row = row_for(schedule)
    except TypeError as exc:
        raise ImproperlyConfigured(str(exc)) from None
    values: dict[str, Any] = {f"{field}_id": None for field in PeriodicTask.SCHEDULE_FIELDS}
    values[f"{row.periodic_task_field}_id"] = row.pk
    return values


def _field_values(declaration: Declaration) -> dict[str, Any]:
    return {
        "task": declaration.task,
        **_schedule_fields(declaration.schedule),
        "args": list(declaration.args),
        "kwargs": declaration.kwargs,
        "queue": declaration.queue,
        "exchange": declaration.exchange,
        "routing_key": declaration.routing_key,
        "priority": declaration.priority,
        "headers": declaration.headers,
        "expires": declaration.expires,
        "expire_seconds": declaration.expire_seconds,
        "one_off": declaration.one_off,
        "start_time": declaration.start_time,
        "misfire_policy": declaration.misfire_policy,
        "description": declaration.description,
    }


def _validated(row: PeriodicTask, name: str) -> PeriodicTask:
    try:
        row.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        problems = "; ".join(
            f"{key}: {' '.join(errors)}" for key, errors in exc.message_dict.items()
        )
        raise ImproperlyConfigured(f"Periodic task {name!r} declared in code: {problems}") from None
    return row


def _upsert(declaration: Declaration) -> str:
    """Create or update one declared task; return ``created``, ``updated``, ``same`` or ``skipped``."""
    values = _field_values(declaration)
    row = PeriodicTask.objects.filter(name=declaration.name).first()
    if row is None:
        enabled = True if declaration.enabled is None else declaration.enabled
        row = PeriodicTask(name=declaration.name, code_managed=True, enabled=enabled, **values)
        _validated(row, declaration.name).save(force_insert=True)
        return "created"
    if not row.code_managed:
        return "skipped"
    if declaration.enabled is not None:
        values["enabled"] = declaration.enabled
    changed = [key for key, value in values.items() if getattr(row, key) != value]
    if not changed:
        return "same"
    for key in changed:
        setattr(row, key, values[key])
    _validated(row, declaration.name).save()
    return "updated"


def sync_declared(declared: list[Declaration] | None = None) -> SyncReport:
    """Make the code-managed rows match ``declared`` (default: every declaration in code)."""
    declared = declarations() if declared is None else declared
    alias = router.db_for_write(PeriodicTask) or "default"
    outcomes: dict[str, list[str]] = {"created": [], "updated": [], "skipped": [], "same": []}
    for declaration in declared:
        try:
            with write_atomic(alias):  # reads, then writes: SQLite's write lock at BEGIN
                outcome = _upsert(declaration)
        except IntegrityError:  # another beat created it at the same moment
            with write_atomic(alias):
                outcome = _upsert(declaration)
        outcomes[outcome].append(declaration.name)
    for name in outcomes["skipped"]:
        logger.warning(
            "Periodic task %r is declared in code but a task of that name was created in the "
            "admin; the code's declaration is ignored. Rename one of them.",
            name,
        )
    stale = PeriodicTask.objects.filter(code_managed=True).exclude(
        name__in=[declaration.name for declaration in declared]
    )
    deleted = tuple(stale.values_list("name", flat=True))
    stale.delete()
    return SyncReport(
        created=tuple(outcomes["created"]),
        updated=tuple(outcomes["updated"]),
        deleted=deleted,
        skipped=tuple(outcomes["skipped"]),
    )
