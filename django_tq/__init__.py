"""django_tq: a distributed task queue that is a reusable Django app.

The public API is re-exported here and loaded lazily, so importing ``django_tq`` (as Django does
while reading ``INSTALLED_APPS``) has no side effects.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "task": "django_tq.tasks",
    "shared_task": "django_tq.tasks",
    "send_task": "django_tq.tasks",
    "publisher": "django_tq.publishers",
    "asend_task": "django_tq.tasks",
    "periodic_task": "django_tq.beat.declarations",
    "crontab": "django_tq.schedules",
    "solar": "django_tq.sun",
    "Queue": "django_tq.exchanges",
    "Broadcast": "django_tq.exchanges",
    "Task": "django_tq.tasks",
    "AsyncResult": "django_tq.result",
    "EagerResult": "django_tq.result",
    "GroupResult": "django_tq.result",
    "Signature": "django_tq.canvas",
    "signature": "django_tq.canvas",
    "chain": "django_tq.canvas",
    "group": "django_tq.canvas",
    "chord": "django_tq.canvas",
    "get_task_logger": "django_tq.log",
    "states": "django_tq",
    "exceptions": "django_tq",
}

if TYPE_CHECKING:
    from django_tq import exceptions, states
    from django_tq.beat.declarations import periodic_task
    from django_tq.canvas import Signature, chain, chord, group, signature
    from django_tq.exchanges import Broadcast, Queue
    from django_tq.log import get_task_logger
    from django_tq.publishers import publisher
    from django_tq.result import AsyncResult, EagerResult, GroupResult
    from django_tq.schedules import crontab
    from django_tq.sun import solar
    from django_tq.tasks import Task, asend_task, send_task, shared_task, task

__all__ = [
    "AsyncResult",
    "Broadcast",
    "EagerResult",
    "GroupResult",
    "Queue",
    "Signature",
    "Task",
    "asend_task",
    "chain",
    "chord",
    "crontab",
    "exceptions",
    "get_task_logger",
    "group",
    "periodic_task",
    "publisher",
    "send_task",
    "shared_task",
    "signature",
    "solar",
    "states",
    "task",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'django_tq' has no attribute {name!r}")
    if module == "django_tq":
        return import_module(f"django_tq.{name}")
    return getattr(import_module(module), name)
