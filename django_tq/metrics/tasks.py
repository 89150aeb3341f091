"""Task metrics, counted where tasks run: receivers of django_tq's signals.

``connect()`` creates the metrics and connects the receivers (the worker's parent calls it before
its pool starts, so prefork children inherit both); until then the hot path pays nothing. In a
prefork worker the values go to the multiprocess directory (see :mod:`.multiprocess`), one file
per child, and the parent's exporter adds them up.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.db.models.signals import post_save

from django_tq import signals
from django_tq.models import DeadLetter

#: runtime buckets, seconds: from a fast lookup to a long report
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
#: queue wait buckets, seconds: from an idle queue to a backlog of hours
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 14400)


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskMetrics:
    """The metric objects the receivers update."""

    tasks: Any
    runtime: Any
    queue_wait: Any
    retries: Any
    dead_letters: Any
    #: labelled children already looked up: ``labels()`` takes a lock, a dict lookup does not
    children: dict[tuple[str, tuple[str, ...]], Any] = field(default_factory=dict)

    def child(self, name: str, *labels: str) -> Any:
        """Return the metric ``name`` with ``labels`` (cached)."""
        key = (name, labels)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = getattr(self, name).labels(*labels)
        return found


def build() -> TaskMetrics:
    """Create the task metrics (unregistered: an exporter collects them, see ``exporter``)."""
    from prometheus_client import Counter, Histogram

    labels = ("task", "queue")
    return TaskMetrics(
        tasks=Counter(
            "django_tq_tasks",
            "Task executions by outcome state (SUCCESS, FAILURE, RETRY, REVOKED, ...).",
            (*labels, "state"),
            registry=None,
        ),
        runtime=Histogram(
            "django_tq_task_runtime_seconds",
            "Time a task took to run, its handlers included.",
            labels,
            buckets=RUNTIME_BUCKETS,
            registry=None,
        ),
        queue_wait=Histogram(
            "django_tq_task_queue_wait_seconds",
            "Time from a message's publish (or its ETA, if later) to a worker starting it.",
            labels,
            buckets=WAIT_BUCKETS,
            registry=None,
        ),
        retries=Counter(
            "django_tq_task_retries", "Retries a task asked for.", labels, registry=None
        ),
        dead_letters=Counter(
            "django_tq_dead_letters",
            "Messages kept as dead letters (they could not run).",
            ("queue",),
            registry=None,
        ),
    )


class _Running(threading.local):
    """What a consumer thread is running: task id -> (queue, start time)."""

    def __init__(self) -> None:
        self.tasks: dict[str, tuple[str, float]] = {}


_metrics: TaskMetrics | None = None
_running = _Running()
DISPATCH_UID = "django_tq.metrics.tasks"


def is_connected() -> bool:
    """Return whether the receivers are connected."""
    return _metrics is not None


def _name(sender: Any) -> str:
    return str(getattr(sender, "name", sender))


def on_received(sender: Any, message: Any, **kwargs: Any) -> None:
    """Observe the queue wait of a message a worker starts."""
    if _metrics is None or message.sent_at is None:
        return
    ready = message.sent_at if message.eta is None else max(message.sent_at, message.eta)
    wait = (dt.datetime.now(dt.UTC) - ready).total_seconds()
    _metrics.child("queue_wait", message.task, message.queue).observe(max(0.0, wait))


def on_started(sender: Any, request: Any, task_id: str, **kwargs: Any) -> None:
    """Note when and on which queue a task started."""
    _running.tasks[task_id] = (request.queue or "", time.perf_counter())


def on_postrun(sender: Any, task_id: str, state: str, **kwargs: Any) -> None:
    """Count the execution by state and observe its runtime."""
    started = _running.tasks.pop(task_id, None)
    if _metrics is None or started is None:
        return
    queue, at = started
    name = _name(sender)
    _metrics.child("tasks", name, queue, state).inc()
    _metrics.child("runtime", name, queue).observe(time.perf_counter() - at)


def on_retried(sender: Any, task_id: str, **kwargs: Any) -> None:
    """Count a retry."""
    if _metrics is None:
        return
    queue = _running.tasks.get(task_id, ("", 0.0))[0]
    _metrics.child("retries", _name(sender), queue).inc()


def on_dead_letter(sender: Any, instance: DeadLetter, created: bool, **kwargs: Any) -> None:
    """Count a dead letter when its row is created."""
    if _metrics is not None and created:
        _metrics.child("dead_letters", instance.queue).inc()


_RECEIVERS: tuple[tuple[Any, Any], ...] = (
    (signals.task_received, on_received),
    (signals.task_started, on_started),
    (signals.task_postrun, on_postrun),
    (signals.task_retried, on_retried),
)


def connect() -> TaskMetrics:
    """Create the metrics (once) and connect the receivers; return the metrics."""
    global _metrics
    if _metrics is None:
        _metrics = build()
        for signal, receiver in _RECEIVERS:
            signal.connect(receiver, dispatch_uid=DISPATCH_UID)
        post_save.connect(on_dead_letter, sender=DeadLetter, dispatch_uid=DISPATCH_UID)
    return _metrics


def disconnect() -> None:
    """Disconnect the receivers and forget the metrics."""
    global _metrics
    for signal, _ in _RECEIVERS:
        signal.disconnect(dispatch_uid=DISPATCH_UID)
    post_save.disconnect(sender=DeadLetter, dispatch_uid=DISPATCH_UID)
    _metrics = None
    _running.tasks.clear()
