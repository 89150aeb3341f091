"""Django's ``TaskResult`` read from django_tq's result data (the ``TaskResult`` row).

========================================  ====================================================
django.tasks                              from django_tq
========================================  ====================================================
``status`` READY                          QUEUED, PENDING, RECEIVED, RETRY (runs again)
``status`` RUNNING                        STARTED, and custom states (``PROGRESS``, …)
``status`` SUCCESSFUL                     SUCCESS
``status`` FAILED                         FAILURE, REVOKED, DEAD
``return_value``                          the stored result of a SUCCESS
``errors``                                the last failure: its class path and traceback
``enqueued_at``                           ``date_created`` (the QUEUED row, or the first start)
``started_at`` / ``last_attempted_at``    ``date_started`` (of the latest attempt)
``finished_at``                           ``date_done``
``attempts`` / ``worker_ids``             retries + deliveries of the latest message; django_tq
                                          keeps the worker of the latest attempt only, so each
                                          entry of ``worker_ids`` names it
``task.priority`` / ``queue_name`` /      the stored level read back (:mod:`.priority`), the
``run_after``                             queue (``TQ["DEFAULT_QUEUE"]`` reads as Django's
                                          ``"default"``), the ETA
========================================  ====================================================
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

import django_tq.backends.compat as compat
import django_tq.backends.priority as priority
from django_tq import serialization, states
from django_tq.conf import tq_settings
from django_tq.result_backends import ResultData

READY_FROM = frozenset({states.PENDING, states.QUEUED, states.RECEIVED, states.RETRY})
FAILED_FROM = frozenset({states.FAILURE, states.REVOKED, states.DEAD})
#: the class a failure is reported as when no exception was stored (revoked, dead-lettered)
NO_EXCEPTION = {
    states.REVOKED: "django_tq.exceptions.TaskRevokedError",
    states.DEAD: "django_tq.exceptions.TaskError",
}
BASE_EXCEPTION_RAISED = "django_tq.backends.adapter.BaseExceptionRaised"


def status_of(state: str) -> Any:
    """Return Django's ``TaskResultStatus`` for a django_tq state."""
    if state in READY_FROM:
        return compat.TaskResultStatus.READY
    if state == states.SUCCESS:
        return compat.TaskResultStatus.SUCCESSFUL
    if state in FAILED_FROM:
        return compat.TaskResultStatus.FAILED
    return compat.TaskResultStatus.RUNNING  # STARTED and custom states


def _errors(data: ResultData) -> list[Any]:
    if data.state not in FAILED_FROM:
        return []
    stored = data.result
    if serialization.is_exception_data(stored):
        path = str(stored["exc_type"])
        arguments = stored.get("exc_args") or []
        if path == BASE_EXCEPTION_RAISED and arguments:
            path = str(arguments[0])  # a SystemExit (or the like) the task raised
        text = data.traceback or f"{path}: {stored.get('exc_message', '')}\n"
    else:
        path = NO_EXCEPTION.get(data.state, "django_tq.exceptions.TaskError")
        reason = stored.get("reason") if isinstance(stored, dict) else stored
        text = data.traceback or f"{path}: {reason or data.state}\n"
    return [compat.TaskError(exception_class_path=path, traceback=text)]


def _attempts(data: ResultData, status: Any) -> int:
    """How many times the task was attempted: each retry, and each delivery of the latest
    message that started it (a redelivery after a worker died is an attempt too)."""
    if status == compat.TaskResultStatus.READY:
        return data.retries
    started = data.date_started is not None or data.state in (states.SUCCESS, states.FAILURE)
    return data.retries + (max(1, data.delivery_count) if started else 0)


def django_queue(queue: str) -> str:
    """Return the ``queue_name`` a django_tq queue reads back as."""
    return compat.DEFAULT_TASK_QUEUE_NAME if queue == tq_settings.DEFAULT_QUEUE else queue


def _task(django_task: Any, data: ResultData, alias: str) -> Any:
    """Return the Task as enqueued: the declared one with the stored priority, queue and ETA."""
    try:
        backend = compat.task_backends[alias]
    except ImproperlyConfigured:  # InvalidTaskBackend: not in this process's TASKS
        backend, alias = django_task.get_backend(), django_task.backend
    changes: dict[str, Any] = {"backend": alias}
    if data.priority is not None:
        changes["priority"] = priority.to_priority(data.priority)
    queue = django_queue(data.queue) if data.queue else django_task.queue_name
    if not backend.queues or queue in backend.queues:
        changes["queue_name"] = queue
    if data.eta is not None and data.state in READY_FROM | {states.STARTED}:
        changes["run_after"] = data.eta
    return dataclasses.replace(django_task, **changes)


def build(django_task: Any, data: ResultData, *, alias: str) -> Any:
    """Return Django's ``TaskResult`` for ``data``, a result of ``django_task``."""
    status = status_of(data.state)
    attempts = _attempts(data, status)
    finished = status in (compat.TaskResultStatus.SUCCESSFUL, compat.TaskResultStatus.FAILED)
    result = compat.TaskResult(
        task=_task(django_task, data, alias),
        id=data.task_id,
        status=status,
        enqueued_at=data.date_created,
        started_at=data.date_started,
        finished_at=data.date_done if finished else None,
        last_attempted_at=data.date_started,
        args=list(data.args or []),
        kwargs=dict(data.kwargs or {}),
        backend=alias,
        errors=_errors(data),
        worker_ids=[data.worker] * attempts,
    )
    if status == compat.TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", data.result)
    return result


def _on_backend(django_task: Any, alias: str) -> Any:
    """Return ``django_task`` on backend ``alias``; as declared if this process's ``TASKS`` has
    no such alias (a worker whose settings differ from the caller's must still run the task)."""
    if django_task.backend == alias:
        return django_task
    try:
        return django_task.using(backend=alias)
    except ImproperlyConfigured:  # InvalidTaskBackend
        return django_task


def _fresh(
    task: Any,
    task_id: str,
    status: Any,
    *,
    alias: str,
    args: list[Any],
    kwargs: dict[str, Any],
    enqueued_at: dt.datetime,
    started_at: dt.datetime | None = None,
    worker_ids: list[str] | None = None,
) -> Any:
    """Return a ``TaskResult`` not finished yet (nothing read from the result backend)."""
    return compat.TaskResult(
        task=task,
        id=task_id,
        status=status,
        enqueued_at=enqueued_at,
        started_at=started_at,
        finished_at=None,
        last_attempted_at=started_at,
        args=args,
        kwargs=kwargs,
        backend=alias,
        errors=[],
        worker_ids=worker_ids or [],
    )


def running(
    django_task: Any,
    task_id: str,
    data: ResultData | None,
    *,
    alias: str,
    args: list[Any],
    kwargs: dict[str, Any],
    attempts: int,
    worker: str,
) -> Any:
    """Return the ``TaskResult`` of the execution starting now (``data``: what is stored)."""
    enqueued_at = data.date_created if data is not None else None
    started_at = data.date_started if data is not None and data.date_started else timezone.now()
    return _fresh(
        _on_backend(django_task, alias),
        task_id,
        compat.TaskResultStatus.RUNNING,
        alias=alias,
        args=args,
        kwargs=kwargs,
        enqueued_at=enqueued_at or started_at,
        started_at=started_at,
        worker_ids=[worker] * attempts,
    )


def queued(task: Any, task_id: str, *, alias: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Return the ``TaskResult`` ``enqueue()`` returns: READY, enqueued now."""
    return _fresh(
        task,
        task_id,
        compat.TaskResultStatus.READY,
        alias=alias,
        args=args,
        kwargs=kwargs,
        enqueued_at=timezone.now(),
    )


def bare_data(
    task_id: str,
    state: str,
    name: str,
    *,
    result: Any = None,
    traceback: str = "",
    started_at: dt.datetime | None = None,
) -> ResultData:
    """Return result data for a task nothing was stored for (no result backend, eager mode)."""
    now = timezone.now()
    return ResultData(
        task_id=task_id,
        state=state,
        task_name=name,
        result=result,
        traceback=traceback,
        delivery_count=1,
        date_created=started_at or now,
        date_started=started_at or now,
        date_done=now if state in states.READY_STATES else None,
    )
