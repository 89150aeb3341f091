"""Receivers of Django's task signals (``django.tasks.signals``) that append one JSON line each to
a file: a worker subprocess connects them when ``TQ_TEST_DJANGO_SIGNAL_LOG`` names the file."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tests.testapp.signal_log import append, read

__all__ = ["ENV", "connect", "disconnect", "read"]

ENV = "TQ_TEST_DJANGO_SIGNAL_LOG"
NAMES = ("task_enqueued", "task_started", "task_finished")


def _signals() -> Any:
    try:
        from django.tasks import signals
    except ImportError:
        from django_tasks import signals  # type: ignore[no-redef]
    return signals


def _receiver(name: str) -> Callable[..., None]:
    def receive(sender: Any, task_result: Any, **kwargs: Any) -> None:
        path = os.environ.get(ENV)
        if not path:
            return
        line = {
            "signal": name,
            "sender": getattr(sender, "__name__", None),
            "id": task_result.id,
            "status": str(task_result.status),
            "module_path": task_result.task.module_path,
            "attempts": task_result.attempts,
            "worker_ids": task_result.worker_ids,
            "backend": task_result.backend,
            "errors": [error.exception_class_path for error in task_result.errors],
            "return_value": task_result._return_value,
            "pid": os.getpid(),
        }
        append(path, line)

    return receive


RECEIVERS = {name: _receiver(name) for name in NAMES}


def connect() -> None:
    """Connect every receiver (they write only while the environment variable is set)."""
    signals = _signals()
    for name, receiver in RECEIVERS.items():
        getattr(signals, name).connect(receiver, dispatch_uid=f"django-signal-log-{name}")


def disconnect() -> None:
    """Disconnect every receiver."""
    signals = _signals()
    for name in NAMES:
        getattr(signals, name).disconnect(dispatch_uid=f"django-signal-log-{name}")
