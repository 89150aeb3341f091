"""The request of the task running now (``self.request`` in a bound task), and how a message
becomes one (:func:`build_request`)."""

from __future__ import annotations

import datetime as dt
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django_tq.message import TaskMessage


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """What a running task knows about its own call."""

    id: str | None = None
    task: str = ""
    shadow: str | None = None  #: the name logs show (``apply_async(shadow=…)``)
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
    #: how the message came, in Celery's shape: ``exchange`` ("", the default one),
    #: ``routing_key`` and ``queue`` (the queue's name), ``priority``, ``redelivered``
    delivery_info: dict[str, Any] = field(default_factory=dict)
    ignore_result: bool = False
    time_limit: float | None = None
    soft_time_limit: float | None = None
    is_eager: bool = False
    called_directly: bool = True


DIRECT_CALL = Request()


def build_request(
    message: TaskMessage, *, hostname: str = "", delivery_count: int = 1, is_eager: bool = False
) -> Request:
    """Return the ``self.request`` of an execution of ``message``."""
    return Request(
        id=message.id,
        task=message.task,
        shadow=message.shadow,
        args=message.args,
        kwargs=message.kwargs,
        retries=message.retries,
        delivery_count=delivery_count,
        eta=message.eta,
        expires=message.expires,
        root_id=message.root_id,
        parent_id=message.parent_id,
        group_id=message.group_id,
        chord=message.chord,
        hostname=hostname,
        queue=message.queue,
        headers=message.headers,
        delivery_info={
            "exchange": message.exchange or "",
            "routing_key": message.routing_key or message.queue,
            "queue": message.queue,
            "priority": message.priority,
            "redelivered": delivery_count > 1,
        },
        ignore_result=message.ignore_result,
        time_limit=message.time_limit,
        soft_time_limit=message.soft_time_limit,
        is_eager=is_eager,
        called_directly=False,
    )


current_request: ContextVar[Request | None] = ContextVar("django_tq_request", default=None)
