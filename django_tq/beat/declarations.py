"""Periodic tasks declared in code: ``TQ["BEAT_SCHEDULE"]`` entries and ``@periodic_task``.

Both become :class:`Declaration` values; beat syncs them into the ``PeriodicTask`` table when it
starts (see :mod:`django_tq.beat.sync`)::

    TQ = {"BEAT_SCHEDULE": {
        "nightly-report": {"task": "shop.tasks.report", "schedule": crontab(minute=0, hour=3)},
        "poll": {"task": "shop.tasks.poll", "schedule": 30, "options": {"queue": "io"}},
    }}

    @periodic_task(run_every=timedelta(minutes=5))
    def refresh() -> None: ...
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from django_tq.conf import tq_settings
from django_tq.models.periodic_tasks import MisfirePolicy
from django_tq.schedules import Schedule, to_schedule
from django_tq.tasks import Task, task

ENTRY_KEYS = frozenset(
    {
        "task", "schedule", "args", "kwargs", "options", "description", "misfire_policy",
        "one_off", "enabled", "start_time",
    }
)  # fmt: skip
OPTION_KEYS = frozenset({"queue", "exchange", "routing_key", "priority", "headers", "expires"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Declaration:
    """A periodic task as code declares it."""

    name: str
    task: str
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = ""
    exchange: str = ""
    routing_key: str = ""
    priority: int | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    expires: dt.datetime | None = None
    expire_seconds: int | None = None
    one_off: bool = False
    start_time: dt.datetime | None = None
    misfire_policy: str = MisfirePolicy.RUN_ONCE
    description: str = ""
    enabled: bool | None = None  #: None: leave it to the admin (a paused task stays paused)


_decorated: dict[str, Declaration] = {}


def periodic_task(
    *,
    run_every: Schedule | dt.timedelta | float,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    schedule_name: str | None = None,
    misfire_policy: str = MisfirePolicy.RUN_ONCE,
    description: str | None = None,
    **task_options: Any,
) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
    """Declare a task (as ``@task(**task_options)``) and the schedule it runs on.

    ``run_every`` is a ``crontab(...)``, a timedelta or seconds. The periodic task is named
    ``schedule_name`` (default: the task's name) and synced into the database when beat starts.
    """
    schedule = to_schedule(run_every)

    def decorate(function: Callable[..., Any]) -> Task[Any, Any]:
        declared: Task[Any, Any] = task(**task_options)(function)
        summary = (function.__doc__ or "").strip().splitlines()
        name = schedule_name or declared.name
        _decorated[name] = _checked(
            name,
            Declaration(
                name=name,
                task=declared.name,
                schedule=schedule,
                args=tuple(args),
                kwargs=dict(kwargs or {}),
                misfire_policy=misfire_policy,
                description=description if description is not None else next(iter(summary), ""),
            ),
        )
        return declared

    return decorate


def _checked(name: str, declaration: Declaration) -> Declaration:
    if declaration.misfire_policy not in MisfirePolicy.values:
        raise ImproperlyConfigured(
            f"Periodic task {name!r}: misfire_policy must be one of {MisfirePolicy.values}, "
            f"got {declaration.misfire_policy!r}."
        )
    try:
        json.dumps([declaration.args, declaration.kwargs, declaration.headers])
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"Periodic task {name!r}: args, kwargs and headers must be plain JSON ({exc})."
        ) from None
    return declaration


def from_setting(name: str, entry: Any) -> Declaration:
    """Read one ``TQ["BEAT_SCHEDULE"]`` entry; raise ``ImproperlyConfigured`` naming the problem."""
    where = f"TQ['BEAT_SCHEDULE'][{name!r}]"
    if not isinstance(entry, Mapping):
        raise ImproperlyConfigured(f"{where} must be a dict with 'task' and 'schedule'.")
    unknown = sorted(set(entry) - ENTRY_KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"{where} has unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(ENTRY_KEYS))}."
        )
    if not isinstance(entry.get("task"), str) or "schedule" not in entry:
        raise ImproperlyConfigured(f"{where} needs 'task' (a task name) and 'schedule'.")
    try:
        schedule = to_schedule(entry["schedule"])
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{where}['schedule']: {exc}") from None
    options = entry.get("options") or {}
    if not isinstance(options, Mapping) or set(options) - OPTION_KEYS:
        raise ImproperlyConfigured(
            f"{where}['options'] takes only {', '.join(sorted(OPTION_KEYS))}, got {options!r}."
        )
    args, kwargs = entry.get("args") or (), entry.get("kwargs") or {}
    if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
        raise ImproperlyConfigured(f"{where}: 'args' must be a list and 'kwargs' a dict.")
    expires = options.get("expires")
    return _checked(
        name,
        Declaration(
            name=name,
            task=entry["task"],
            schedule=schedule,
            args=tuple(args),
            kwargs=dict(kwargs),
            queue=options.get("queue") or "",
            exchange=options.get("exchange") or "",
            routing_key=options.get("routing_key") or "",
            priority=options.get("priority"),
            headers=dict(options.get("headers") or {}),
            expires=expires if isinstance(expires, dt.datetime) else None,
            expire_seconds=int(expires) if isinstance(expires, int | float) else None,
            one_off=bool(entry.get("one_off", False)),
            start_time=entry.get("start_time"),
            misfire_policy=entry.get("misfire_policy", MisfirePolicy.RUN_ONCE),
            description=entry.get("description", ""),
            enabled=entry.get("enabled"),
        ),
    )


def declarations() -> list[Declaration]:
    """Return every periodic task declared in code, from the setting and the decorator."""
    found = {name: from_setting(name, entry) for name, entry in tq_settings.BEAT_SCHEDULE.items()}
    for name, declaration in _decorated.items():
        if name in found:
            raise ImproperlyConfigured(
                f"Periodic task {name!r} is declared both in TQ['BEAT_SCHEDULE'] and with "
                "@periodic_task; pass schedule_name= to one of them."
            )
        found[name] = declaration
    return list(found.values())


def forget_decorated(name: str) -> None:
    """Drop a ``@periodic_task`` declaration (tests use this)."""
    _decorated.pop(name, None)
