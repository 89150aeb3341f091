"""Queue names the settings and the registry know: where tasks go, what workers consume.

``routed_queues()`` is every queue a task can be sent to without naming one at the call:
``TQ["DEFAULT_QUEUE"]``, each registered task's ``queue`` (a ``django.tasks`` Task's
``queue_name``), every queue ``TASK_ROUTES`` names in a dict (a callable router cannot be read
without a call), ``BEAT_SCHEDULE`` options, and the ``QUEUES`` of each ``TQTaskBackend`` in
Django's ``TASKS``, and the queues ``TQ["QUEUES"]`` declares. ``worker_queues()`` is what
``tqworker`` consumes without ``-Q``: ``TQ["WORKER_QUEUES"]``, else every declared queue (as
Celery's worker consumes ``task_queues``), else the default queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from django_tq.conf import tq_settings
from django_tq.registry import registry

BACKEND_PATHS = ("django_tq.backends.TQTaskBackend", "django_tq.backends.backend.TQTaskBackend")
#: Django's default ``queue_name``: the ``TQ["DEFAULT_QUEUE"]`` of django_tq
DJANGO_DEFAULT_QUEUE = "default"


def worker_queues() -> list[str]:
    """Return the queues ``tqworker`` consumes when it is started without ``-Q``."""
    configured = tq_settings.WORKER_QUEUES
    if configured:
        return list(configured)
    return tq_settings.QUEUES.names or [tq_settings.DEFAULT_QUEUE]


def _route_queues(routes: Any) -> list[tuple[str, str]]:
    entries = routes if isinstance(routes, list | tuple) else [routes]
    found = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue  # a callable router: its queues are known only when it is called
        for pattern, options in entry.items():
            if isinstance(options, str):
                found.append((options, f"TASK_ROUTES[{pattern!r}]"))
            elif isinstance(options, Mapping):
                # a routing key names its queue unless QUEUES binds queues to keys
                key = None if tq_settings.QUEUES.queues else options.get("routing_key")
                queue = options.get("queue") or key
                if queue:
                    found.append((str(queue), f"TASK_ROUTES[{pattern!r}]"))
    return found


def _django_tasks_queues() -> list[tuple[str, str]]:
    found = []
    for alias, params in (getattr(settings, "TASKS", None) or {}).items():
        if not isinstance(params, Mapping) or params.get("BACKEND") not in BACKEND_PATHS:
            continue
        for name in params.get("QUEUES") or []:
            queue = tq_settings.DEFAULT_QUEUE if name == DJANGO_DEFAULT_QUEUE else str(name)
            found.append((queue, f"TASKS[{alias!r}]['QUEUES']"))
    return found


def routed_queues() -> dict[str, list[str]]:
    """Return each queue tasks can be sent to, with what sends there (for messages)."""
    found: list[tuple[str, str]] = [(tq_settings.DEFAULT_QUEUE, "TQ['DEFAULT_QUEUE']")]
    for name, task in registry.items():
        if task.queue:
            found.append((task.queue, f"task {name}"))
    found.extend(_route_queues(tq_settings.TASK_ROUTES))
    for key, entry in tq_settings.BEAT_SCHEDULE.items():
        options = entry.get("options") if isinstance(entry, Mapping) else None
        if isinstance(options, Mapping) and options.get("queue"):
            found.append((str(options["queue"]), f"BEAT_SCHEDULE[{key!r}]"))
    found.extend(_django_tasks_queues())
    found.extend((name, "TQ['QUEUES']") for name in tq_settings.QUEUES.names)
    queues: dict[str, list[str]] = {}
    for queue, source in found:
        queues.setdefault(queue, []).append(source)
    return queues
