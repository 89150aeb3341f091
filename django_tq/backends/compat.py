"""Which ``django.tasks`` this process has: Django 6's built-in one, or the ``django-tasks``
backport on Django 5.2 (``pip install "django-tq[django-tasks]"``).

The two have the same API (the backport 0.12 matches Django 6.0) under different module names,
and one exception spelled differently (``InvalidTask`` / ``InvalidTaskError``). Everything else
in :mod:`django_tq.backends` reads them from here.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any

from django.core.exceptions import ImproperlyConfigured

#: the packages tried, in order: Django's own first, so a Django 6 project with the backport
#: still installed uses ``django.tasks``
PACKAGES = ("django.tasks", "django_tasks")


def _load() -> tuple[str, ModuleType, ModuleType, ModuleType, ModuleType, ModuleType]:
    for package in PACKAGES:
        try:
            root = import_module(package)
        except ImportError:
            continue
        return (
            package,
            root,
            import_module(f"{package}.base"),
            import_module(f"{package}.backends.base"),
            import_module(f"{package}.exceptions"),
            import_module(f"{package}.signals"),
        )
    raise ImproperlyConfigured(
        "django_tq.backends.TQTaskBackend needs django.tasks: Django 6, or on Django 5.2 the "
        'django-tasks backport (pip install "django-tq[django-tasks]").'
    )


PACKAGE, _root, _base, _backends, _exceptions, _signals = _load()

BaseTaskBackend: Any = _backends.BaseTaskBackend
Task: Any = _base.Task
TaskContext: Any = _base.TaskContext
TaskError: Any = _base.TaskError
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
DEFAULT_TASK_QUEUE_NAME: str = _root.DEFAULT_TASK_QUEUE_NAME
TASK_MIN_PRIORITY: int = _base.TASK_MIN_PRIORITY
TASK_MAX_PRIORITY: int = _base.TASK_MAX_PRIORITY
task_backends: Any = _root.task_backends

InvalidTask: type[Exception] = (
    getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
)
TaskResultDoesNotExist: type[Exception] = _exceptions.TaskResultDoesNotExist
TaskResultMismatch: type[Exception] = _exceptions.TaskResultMismatch

task_enqueued: Any = _signals.task_enqueued
task_started: Any = _signals.task_started
task_finished: Any = _signals.task_finished


def normalize_json(value: Any) -> Any:
    """Return ``value`` as plain JSON types (tuples become lists), as django.tasks stores it.

    Raises ``TypeError`` ("Unsupported type") for anything JSON cannot hold, as Django does.
    """
    return _base.normalize_json(value)
