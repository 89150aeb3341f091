"""The request of the task running now (``self.request`` in a bound task)."""

from __future__ import annotations

import datetime as dt
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """What a running task knows about its own call."""

    id: str | None = None
    task: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    delivery_count: int = 0
    eta: dt.datetime | None = None
    expires: dt.datetime | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    chord: Any = None
    hostname: str = ""
    queue: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    ignore_result: bool = False
    time_limit: float | None = None
    soft_time_limit: float | None = None
    is_eager: bool = False
    called_directly: bool = True


DIRECT_CALL = Request()

current_request: ContextVar[Request | None] = ContextVar("django_tq_request", default=None)
