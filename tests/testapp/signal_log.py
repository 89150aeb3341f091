"""Receivers of every django_tq signal that append one JSON line each to a file (signal tests).

A worker subprocess connects them when ``TQ_TEST_SIGNAL_LOG`` names the file (see apps.py); the
test process connects them itself with :func:`connect`. Lines are appended with one ``write`` to
a file opened with ``O_APPEND``, so lines from several processes never mix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from django_tq import signals

ENV = "TQ_TEST_SIGNAL_LOG"
NAMES = (
    "before_task_publish",
    "after_task_publish",
    "task_enqueued",
    "task_received",
    "task_started",
    "task_prerun",
    "task_succeeded",
    "task_failed",
    "task_retried",
    "task_revoked",
    "task_postrun",
    "task_finished",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
)


def _task_id(kwargs: dict[str, Any]) -> str | None:
    message = kwargs.get("message")
    return kwargs.get("task_id") or (message.id if message is not None else None)


def _receiver(name: str) -> Callable[..., None]:
    def receive(sender: Any, **kwargs: Any) -> None:
        path = os.environ.get(ENV)
        if not path:
            return
        line = {
            "signal": name,
            "task_id": _task_id(kwargs),
            "pid": os.getpid(),
            "sender": getattr(sender, "name", None)
            or (sender if isinstance(sender, str) else None),
            "arguments": sorted(key for key in kwargs if key != "signal"),
            "state": kwargs.get("state"),
            "terminated": kwargs.get("terminated"),
            "signal_name": kwargs.get("signal_name"),
            "index": kwargs.get("index"),
        }
        if name == "task_failed":  # what an error tracker reports
            exception = kwargs["exception"]
            line["exception"] = [type(exception).__name__, str(exception)]
            line["args"], line["kwargs"] = list(kwargs["args"]), kwargs["kwargs"]
            line["traceback"] = kwargs["traceback"]
        if name == "task_started":
            request = kwargs["request"]
            line["hostname"] = request.hostname
            line["is_eager"] = request.is_eager
        append(path, line)

    receive.__qualname__ = f"signal_log.{name}"
    return receive


def append(path: str, line: dict[str, Any]) -> None:
    """Append ``line`` as one JSON line with one ``write`` (lines of processes never mix)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


RECEIVERS = {name: _receiver(name) for name in NAMES}


def connect() -> None:
    """Connect every receiver (they write only while ``TQ_TEST_SIGNAL_LOG`` is set)."""
    for name, receiver in RECEIVERS.items():
        getattr(signals, name).connect(receiver, dispatch_uid=f"signal-log-{name}")


def disconnect() -> None:
    """Disconnect every receiver."""
    for name in NAMES:
        getattr(signals, name).disconnect(dispatch_uid=f"signal-log-{name}")


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Return the lines written so far."""
    try:
        with open(path) as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []
