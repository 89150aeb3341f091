"""Task logging: ``get_task_logger(__name__)`` adds the running task's id and name to records."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from django_tq.context import current_request


class TaskLoggerAdapter(logging.LoggerAdapter[logging.Logger]):
    """Prefix messages with ``task_name[task_id]`` and add both as record attributes."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        request = current_request.get()
        task_id = request.id if request else None
        task_name = (request.shadow or request.task) if request else None
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("task_id", task_id or "???")
        extra.setdefault("task_name", task_name or "???")
        kwargs["extra"] = extra
        if request is not None:
            msg = f"{task_name}[{task_id}]: {msg}"
        return msg, kwargs


def get_task_logger(name: str) -> TaskLoggerAdapter:
    """Return a logger whose records carry the running task's id and name."""
    return TaskLoggerAdapter(logging.getLogger(name), {})
