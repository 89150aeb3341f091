"""Celery's task message (protocol 2), read as a :class:`~django_tq.message.TaskMessage`.

A worker started with ``--accept-celery`` (or ``TQ["ACCEPT_CELERY"]``) runs the messages Celery
producers publish to its queues during a cut-over (docs/migrating-from-celery.md). Celery's
"Message Protocol" reference describes the format:

* headers: ``lang``, ``task``, ``id``, ``shadow``, ``eta``, ``expires``, ``group``,
  ``group_index``, ``retries``, ``timelimit``, ``root_id``, ``parent_id``, ``argsrepr``,
  ``kwargsrepr``, ``origin``, ``ignore_result``, ``stamps``…;
* body: ``[args, kwargs, embed]`` in kombu's JSON (its tagged datetimes, decimals, UUIDs and
  bytes arrive as the same types), with ``embed`` holding ``callbacks``, ``errbacks``, ``chain``
  (the rest of a chain, *last step first*) and ``chord``.

What maps: the headers above, callbacks (``link``), errbacks (``link_error``, called as Celery
calls them) and the rest of a chain, each a plain task signature. What does not raises
:class:`~django_tq.exceptions.DecodeError` with the reason, so the consumer dead-letters the
message before anything runs: a body that is not JSON (pickle above all — never unpickled), a
chord (its counter lives in Celery's result backend), a nested group, chain or chord signature, or
a signature option django_tq has no equivalent for.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django_tq.exceptions import DecodeError
from django_tq.kombu_json import from_kombu
from django_tq.message import TaskMessage
from django_tq.serialization import from_jsonable

JSON = "application/json"
#: Celery signature options that mean the same here (``apply_async``'s names)
SIGNATURE_OPTIONS = frozenset(
    {"task_id", "queue", "priority", "countdown", "eta", "expires", "time_limit",
     "soft_time_limit", "headers", "shadow", "ignore_result", "routing_key"}
)  # fmt: skip
#: options Celery puts in a signature for its own bookkeeping, meaningless to django_tq
IGNORED_OPTIONS = frozenset(
    {"reply_to", "exchange", "delivery_mode", "group_id", "group_index", "root_id", "parent_id",
     "stamped_headers", "stamps", "chord_size", "subtask_type"}
)  # fmt: skip


def is_celery(headers: Any) -> bool:
    """Return whether raw headers are Celery's protocol 2 (a ``task`` and ``lang``, no ``tq``)."""
    return (
        isinstance(headers, dict)
        and "tq" not in headers
        and isinstance(headers.get("task"), str)
        and "lang" in headers
    )


def _text(body: str | bytes) -> str:
    if isinstance(body, bytes):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("Celery message body is not UTF-8 JSON") from None
    return body


def _datetime(value: Any, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise DecodeError(f"Celery header {name!r} is not an ISO datetime: {value!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _signature(data: Any, where: str) -> dict[str, Any]:
    """Return Celery's signature dict as django_tq's; raise ``DecodeError`` if it cannot map."""
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise DecodeError(f"{where} is not a Celery signature: {data!r}")
    kind = data.get("subtask_type")
    if kind:
        raise DecodeError(f"{where}: a {kind} signature ({data['task']}) is not mapped")
    options = dict(data.get("options") or {})
    nested = sorted({"link", "link_error", "chain", "chord"} & options.keys())
    if nested:
        raise DecodeError(f"{where}: signature option(s) {', '.join(nested)} are not mapped")
    unknown = sorted(set(options) - SIGNATURE_OPTIONS - IGNORED_OPTIONS)
    if unknown:
        raise DecodeError(f"{where}: signature option(s) {', '.join(unknown)} are not mapped")
    args, kwargs = data.get("args") or [], data.get("kwargs") or {}
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise DecodeError(f"{where}: args must be a list and kwargs an object")
    return {
        "kind": "task",
        "task": data["task"],
        "args": list(args),
        "kwargs": kwargs,
        "options": {key: value for key, value in options.items() if key in SIGNATURE_OPTIONS},
        "immutable": bool(data.get("immutable")),
    }


def _signatures(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    if not value:
        return ()
    if not isinstance(value, list):
        raise DecodeError(f"embed {where!r} must be a list of signatures")
    return tuple(_signature(entry, f"embed {where}[{n}]") for n, entry in enumerate(value))


def _body(body: str | bytes, content_type: str) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    if content_type != JSON:
        raise DecodeError(
            f"Celery message in {content_type or 'an unknown format'}: django_tq reads Celery "
            "messages in JSON only, never pickle (set task_serializer='json' in Celery)"
        )
    try:
        payload = from_jsonable(from_kombu(json.loads(_text(body))))
    except ValueError as exc:
        raise DecodeError(f"Celery message body is not valid JSON: {exc}") from None
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        raise DecodeError("Celery message body must be [args, kwargs, embed] (protocol 2)")
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise DecodeError("Celery message body: args must be a list and kwargs an object")
    return list(args), kwargs, embed if isinstance(embed, dict) else {}


def decode(
    headers: dict[str, Any], body: str | bytes, content_type: str, *, queue: str
) -> TaskMessage:
    """Return the :class:`TaskMessage` a Celery protocol 2 message stands for.

    Raise :class:`DecodeError` with the reason when it cannot be honoured exactly.
    """
    task_id, name = headers.get("id"), headers.get("task")
    if not isinstance(task_id, str) or not isinstance(name, str):
        raise DecodeError("Celery headers 'id' and 'task' must be strings")
    args, kwargs, embed = _body(body, content_type)
    if embed.get("chord"):
        raise DecodeError(
            "a Celery chord header task: its counter lives in Celery's result backend, so "
            "django_tq cannot complete the chord (let Celery workers finish it)"
        )
    chain = _signatures(embed.get("chain"), "chain")
    limits = headers.get("timelimit") or [None, None]
    if not isinstance(limits, list | tuple) or len(limits) != 2:
        raise DecodeError(f"Celery header 'timelimit' must be [hard, soft]: {limits!r}")
    retries = headers.get("retries") or 0
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise DecodeError(f"Celery header 'retries' must be a count: {retries!r}")
    group = headers.get("group")
    shadow = headers.get("shadow")
    return TaskMessage(
        id=task_id,
        task=name,
        args=tuple(args),
        kwargs=kwargs,
        queue=queue,
        eta=_datetime(headers.get("eta"), "eta"),
        expires=_datetime(headers.get("expires"), "expires"),
        retries=retries,
        root_id=headers.get("root_id") if isinstance(headers.get("root_id"), str) else None,
        parent_id=headers.get("parent_id") if isinstance(headers.get("parent_id"), str) else None,
        group_id=group if isinstance(group, str) else None,
        ignore_result=bool(headers.get("ignore_result")),
        time_limit=limits[0],
        soft_time_limit=limits[1],
        shadow=shadow if isinstance(shadow, str) and shadow else None,
        headers={"celery": True},
        chain=tuple(reversed(chain)),  # Celery keeps the next step last
        link=_signatures(embed.get("callbacks"), "callbacks"),
        link_error=_signatures(embed.get("errbacks"), "errbacks"),
    )
