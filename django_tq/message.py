"""The task message: what travels from ``enqueue()`` through the broker to ``execute()``.

On the wire a message is kombu headers (metadata, always JSON-safe, readable even when the body
is not) plus a body holding ``{"args": [...], "kwargs": {...}}`` in the task's serializer. A task
that is part of a workflow also carries, in the ``canvas`` header, the signatures (as JSON dicts,
see ``django_tq.canvas``) of what follows it: the rest of its chain, its callbacks and errbacks,
and the id of the chord it counts towards.

Producers that are not django_tq (plain kombu, another service) write this format by hand:
docs/transports.md ("The wire format") lists the headers they may send.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from django_tq import serialization
from django_tq.exceptions import DecodeError

PROTOCOL = 1
#: bytes counted for the protocol headers when checking ``MAX_PAYLOAD_BYTES``
HEADERS_ALLOWANCE = 512
#: header marking a message released from parking (a worker skips it if its task already ran)
RELEASED_HEADER = "released"


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskMessage:
    """One call of a task: its identity, arguments and delivery options."""

    id: str
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    #: published to this exchange with ``routing_key`` (``None``: straight into ``queue``)
    exchange: str | None = None
    routing_key: str | None = None
    priority: int | None = None
    eta: dt.datetime | None = None
    expires: dt.datetime | None = None
    retries: int = 0
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    ignore_result: bool = False
    time_limit: float | None = None
    soft_time_limit: float | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    serializer: str = "json"
    #: the kombu compressor of the body (``"gzip"``, ``"bzip2"``, ``"zlib"``; None: none)
    compression: str | None = None
    unique_key: str | None = None  #: the ``UniqueLock`` key this task holds (see ``unique.py``)
    unique_ttl: float | None = None  #: seconds the lock lasts past the time the task is due
    #: the name logs show instead of ``task`` (``apply_async(shadow=…)``); results keep ``task``
    shadow: str | None = None
    #: the steps of its chain still to run after this task, as signature dicts (next first)
    chain: tuple[dict[str, Any], ...] = ()
    #: the group id of the chord whose counter this task's final state decrements
    chord: str | None = None
    #: signatures applied with the return value on success (``link``)
    link: tuple[dict[str, Any], ...] = ()
    #: signatures called on failure (``link_error``)
    link_error: tuple[dict[str, Any], ...] = ()
    #: when the message was encoded for the broker (read back from the ``sent_at`` header;
    #: ``None`` before encoding and for producers that do not send it)
    sent_at: dt.datetime | None = None

    @property
    def log_name(self) -> str:
        """Return the name logs show: the ``shadow`` name, else the task's."""
        return self.shadow or self.task

    @property
    def in_workflow(self) -> bool:
        """Return whether any workflow field is set (the message has a ``canvas`` header)."""
        return bool(self.chain or self.chord or self.link or self.link_error)

    @property
    def canvas(self) -> dict[str, Any]:
        """Return the workflow fields that are set, as the ``canvas`` header carries them."""
        values = {
            "chain": list(self.chain),
            "chord": self.chord,
            "link": list(self.link),
            "link_error": list(self.link_error),
        }
        return {key: value for key, value in values.items() if value}

    def with_changes(self, **changes: Any) -> TaskMessage:
        """Return a copy with ``changes`` applied."""
        return replace(self, **changes)


@dataclass(frozen=True, kw_only=True, slots=True)
class WireMessage:
    """A message as the broker carries it."""

    headers: dict[str, Any]
    body: str | bytes
    content_type: str

    @property
    def size(self) -> int:
        """Return the size in bytes, close enough for a limit: the body, custom headers, and
        a fixed allowance for the protocol headers (ids, names, dates)."""
        body = self.body
        if isinstance(body, str):
            size = len(body) if body.isascii() else len(body.encode("utf-8"))
        else:
            size = len(body)
        headers = self.headers
        for key in ("custom", "canvas"):
            value = headers.get(key)
            if value:
                size += len(serialization.to_json(value))
        return size + HEADERS_ALLOWANCE

    @property
    def route(self) -> tuple[str, str] | None:
        """Return the ``(exchange, routing key)`` it is published through, or ``None`` (by queue)."""
        route = self.headers.get("route")
        if isinstance(route, list) and len(route) == 2 and all(isinstance(v, str) for v in route):
            return route[0], route[1]
        return None


def body_to_text(body: str | bytes) -> str:
    """Return ``body`` as text for a database column (``base64:…`` when it is binary)."""
    if isinstance(body, bytes):
        return "base64:" + base64.b64encode(body).decode("ascii")
    return body


def body_from_text(text: str) -> str | bytes:
    """Return the body stored by :func:`body_to_text`."""
    if text.startswith("base64:"):
        return base64.b64decode(text[7:])
    return text


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _datetime(value: Any, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"header {name!r} is not an ISO datetime: {value!r}") from exc


def _informative_datetime(value: Any) -> dt.datetime | None:
    """Read a header that only informs (metrics): a bad value is ``None``, not a DecodeError."""
    try:
        return _datetime(value, "")
    except DecodeError:
        return None


#: characters of a task's arguments shown by ``tqinspect`` and the admin's live lists
ARGS_SHOWN = 200


def shorten(value: Any) -> str:
    """Return ``repr(value)`` cut to :data:`ARGS_SHOWN` characters (arguments, for display)."""
    text = repr(value)
    return text if len(text) <= ARGS_SHOWN else text[: ARGS_SHOWN - 1] + "…"


def encode(message: TaskMessage) -> WireMessage:
    """Serialize ``message`` (raises ``EncodeError`` for arguments the serializer cannot carry)."""
    content_type, body = serialization.dumps(
        {"args": list(message.args), "kwargs": message.kwargs}, message.serializer
    )
    headers: dict[str, Any] = {
        "tq": PROTOCOL,
        "id": message.id,
        "task": message.task,
        "retries": message.retries,
        "root_id": message.root_id,
        "parent_id": message.parent_id,
        "group_id": message.group_id,
        "eta": _iso(message.eta),
        "expires": _iso(message.expires),
        "ignore_result": message.ignore_result,
        "timelimit": [message.time_limit, message.soft_time_limit],
        "sent_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    if message.priority is not None:
        headers["priority"] = message.priority  # the broker's property too; this one is read back
    if message.shadow:
        headers["shadow"] = message.shadow
    if message.exchange is not None:
        headers["route"] = [message.exchange, message.routing_key or ""]
    if message.headers:
        headers["custom"] = message.headers
    if message.unique_key is not None:
        headers["unique"] = [message.unique_key, message.unique_ttl]
    if message.in_workflow:  # (building ``canvas`` only then: most messages have none)
        headers["canvas"] = serialization.to_jsonable(message.canvas)
    return WireMessage(headers=headers, body=body, content_type=content_type)


def round_trip(message: TaskMessage) -> TaskMessage:
    """Return ``message`` as a worker would decode it (in-process runs go through the wire too)."""
    wire = encode(message)
    return decode(
        wire.headers, wire.body, wire.content_type, queue=message.queue, accept=[message.serializer]
    )


def read_id(headers: Any) -> str | None:
    """Return the task id from raw headers if one can be read, else ``None``."""
    if isinstance(headers, dict) and isinstance(headers.get("id"), str):
        return str(headers["id"])
    return None


def read_unique_key(headers: Any) -> str | None:
    """Return the unique key from raw headers if one can be read, else ``None``."""
    unique = headers.get("unique") if isinstance(headers, dict) else None
    if isinstance(unique, list) and unique and isinstance(unique[0], str):
        return unique[0]
    return None


def decode(
    headers: Any,
    body: str | bytes,
    content_type: str,
    *,
    queue: str,
    accept: list[str],
    priority: int | None = None,
) -> TaskMessage:
    """Rebuild a :class:`TaskMessage` from the wire; raise ``DecodeError`` with the reason.

    ``priority``: the message's priority when its headers carry none (a foreign producer's,
    from the broker's property), set here rather than by a copy of the message afterwards.
    """
    if not isinstance(headers, dict) or headers.get("tq") != PROTOCOL:
        raise DecodeError("not a django_tq message (missing or unknown 'tq' protocol header)")
    task_id, name = headers.get("id"), headers.get("task")
    if not isinstance(task_id, str) or not isinstance(name, str):
        raise DecodeError("headers 'id' and 'task' must be strings")
    payload = serialization.loads(body, content_type, accept)
    if not isinstance(payload, dict):
        raise DecodeError("body must be an object with 'args' and 'kwargs'")
    args, kwargs = payload.get("args", []), payload.get("kwargs", {})
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise DecodeError("body 'args' must be a list and 'kwargs' an object")
    limits = headers.get("timelimit") or [None, None]
    custom = headers.get("custom") or {}
    unique = headers.get("unique")
    unique_ttl = unique[1] if isinstance(unique, list) and len(unique) > 1 else None
    canvas = _canvas(headers.get("canvas"))
    route = headers.get("route")
    exchange, routing_key = route if isinstance(route, list) and len(route) == 2 else (None, None)
    return TaskMessage(
        id=task_id,
        task=name,
        args=tuple(args),
        kwargs=kwargs,
        queue=queue,
        exchange=exchange if isinstance(exchange, str) else None,
        routing_key=routing_key if isinstance(routing_key, str) else None,
        priority=_priority(headers.get("priority"), priority),
        shadow=headers["shadow"] if isinstance(headers.get("shadow"), str) else None,
        eta=_datetime(headers.get("eta"), "eta"),
        expires=_datetime(headers.get("expires"), "expires"),
        retries=int(headers.get("retries") or 0),
        root_id=headers.get("root_id"),
        parent_id=headers.get("parent_id"),
        group_id=headers.get("group_id"),
        ignore_result=bool(headers.get("ignore_result")),
        time_limit=limits[0],
        soft_time_limit=limits[1],
        headers=custom if isinstance(custom, dict) else {},
        serializer="pickle" if content_type == serialization.PICKLE else "json",
        unique_key=read_unique_key(headers),
        unique_ttl=float(unique_ttl) if isinstance(unique_ttl, int | float) else None,
        chain=tuple(canvas.get("chain", ())),
        chord=canvas.get("chord"),
        link=tuple(canvas.get("link", ())),
        link_error=tuple(canvas.get("link_error", ())),
        sent_at=_informative_datetime(headers.get("sent_at")),
    )


def _priority(value: Any, default: int | None = None) -> int | None:
    """Read the ``priority`` header (absent: ``default``, None for the default priority)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise DecodeError("header 'priority' must be an integer 0-9")
    return value


def read_canvas(headers: Any) -> dict[str, Any]:
    """Return the workflow fields (``chain``, ``chord``, ``link``, ``link_error``) of raw headers."""
    canvas = _canvas(headers.get("canvas") if isinstance(headers, dict) else None)
    return {
        key: tuple(value) if isinstance(value, list) else value for key, value in canvas.items()
    }


def _canvas(value: Any) -> dict[str, Any]:
    """Read the ``canvas`` header (absent for a task outside a workflow)."""
    if value is None:
        return {}
    canvas = serialization.from_jsonable(value)
    if not isinstance(canvas, dict):
        raise DecodeError("header 'canvas' must be an object")
    for key in ("chain", "link", "link_error"):
        entries = canvas.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise DecodeError(f"header 'canvas' field {key!r} must be a list of signatures")
    if not isinstance(canvas.get("chord") or "", str):
        raise DecodeError("header 'canvas' field 'chord' must be a group id")
    return canvas
