"""Tasks declared with Django's own ``@task``, run by django_tq's worker through TQTaskBackend."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from tests.testapp.models import Execution

try:
    from django.tasks import TaskContext, task
except ImportError:  # Django 5.2: the backport
    from django_tasks import TaskContext, task  # type: ignore[no-redef]


@task()
def noop_task(*args: Any, **kwargs: Any) -> None:
    return None


@task
def noop_task_from_bare_decorator(*args: Any, **kwargs: Any) -> None:
    return None


@task()
async def noop_task_async(*args: Any, **kwargs: Any) -> None:
    await asyncio.sleep(0)


@task()
def calculate_meaning_of_life() -> int:
    return 42


@task()
def add(x: int, y: int) -> int:
    return x + y


@task()
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


@task()
def returns_tuple() -> tuple[int, int]:
    return (1, 2)


@task()
def failing_task_value_error() -> None:
    raise ValueError("This task failed due to ValueError")


@task()
def failing_task_system_exit() -> None:
    raise SystemExit("This task failed due to SystemExit")


@task()
def complex_exception() -> None:
    raise ValueError(ValueError("This task failed"))


@task()
def complex_return_value() -> Any:
    return time  # a module: not JSON


@task()
def exit_task() -> None:
    exit(1)


@task(takes_context=True)
def get_task_id(context: TaskContext) -> str:
    return context.task_result.id


@task(takes_context=True)
def context_report(context: TaskContext, label: str = "") -> dict[str, Any]:
    """Write an Execution row and return what the context says."""
    result = context.task_result
    Execution.objects.create(task_id=result.id, label=label, pid=os.getpid())
    return {
        "id": result.id,
        "attempt": context.attempt,
        "status": str(result.status),
        "backend": result.backend,
        "worker_ids": result.worker_ids,
        "args": result.args,
        "kwargs": result.kwargs,
        "started": result.started_at is not None,
        "enqueued": result.enqueued_at is not None,
    }


@task(takes_context=True)
async def async_context_report(context: TaskContext) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"id": context.task_result.id, "attempt": context.attempt}


@task()
def record(label: str) -> str:
    """Write an Execution row (the side effect tests count)."""
    Execution.objects.create(task_id="django.tasks", label=label, pid=os.getpid())
    return label


@task(priority=50, queue_name="emails")
def send_email(to: str) -> str:
    return to


@task()
def sleep_for(seconds: float) -> None:
    time.sleep(seconds)


def plain_function(label: str) -> None:
    """Not a task: a message naming it must never run it."""
    Execution.objects.create(task_id="plain", label=label, pid=os.getpid())


@task(takes_context=True)
def hangs_on_first_attempt(context: TaskContext) -> int:
    """Hang on the first attempt (the test kills its worker); return the attempt number."""
    if context.attempt == 1:
        Execution.objects.create(task_id=context.task_result.id, label="first attempt")
        time.sleep(60)
    return int(context.attempt)
