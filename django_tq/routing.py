"""Where a message goes: ``TQ["TASK_ROUTES"]`` for a task name, then the queue, exchange and key.

:func:`route` reads ``TASK_ROUTES``; :func:`destination` turns the ``queue``/``exchange``/
``routing_key`` a call, a task or a route gives into a :class:`Destination` against
``TQ["QUEUES"]`` (see ``exchanges.py``), as Celery does:

* a queue alone goes straight into that queue (a Broadcast queue: to its fanout exchange);
* an exchange and/or a routing key go through the exchange (default ``DEFAULT_EXCHANGE``) with the
  key (default: the named queue's binding key, else ``DEFAULT_ROUTING_KEY``), and must reach a
  declared queue — except on a direct default exchange, where a key no queue is bound with names
  the queue to create (as before exchanges existed), when ``CREATE_MISSING_QUEUES`` allows it;
* a queue not declared in ``QUEUES`` is created when used, or, with ``CREATE_MISSING_QUEUES``
  off, is a :class:`~django_tq.exceptions.QueueNotFound` error at the call.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django_tq.conf import tq_settings
from django_tq.exceptions import QueueNotFound

Route = dict[str, Any]

#: characters a queue name typed in the admin or given over the API may use
QUEUE_NAME = re.compile(r"^[\w.:@-]+$")


@lru_cache(maxsize=1024)
def _compile(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        return pattern
    return re.compile(fnmatch.translate(pattern))


def _normalise(value: Route | str | None) -> Route | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"queue": value}
    return dict(value)


def route(name: str, routes: Any, args: Any = (), kwargs: Any = None) -> Route | None:
    """Return the options of the first route matching task ``name``, or ``None``.

    ``routes`` is a dict ``{glob or re.Pattern: options or queue name}``, a callable
    ``router(name, args, kwargs) -> options | queue | None``, or a list of either; first match wins.
    """
    entries = routes if isinstance(routes, list | tuple) else [routes]
    for entry in entries:
        if callable(entry) and not isinstance(entry, Mapping):
            found = _normalise(entry(name, args, kwargs or {}))
            if found is not None:
                return found
            continue
        for pattern, options in entry.items():
            if _compile(pattern).fullmatch(name):
                return _normalise(options)
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Destination:
    """Where one message is published: a queue by name, or an exchange with a routing key."""

    #: the queue named, else the first declared queue the key reaches (the result row says it)
    queue: str
    #: ``None``: straight into ``queue``; else the exchange the message is published to
    exchange: str | None = None
    routing_key: str | None = None


def _named_queue(name: str) -> Destination:
    topology = tq_settings.QUEUES
    queue = topology.get(name)
    if queue is None:
        if not tq_settings.CREATE_MISSING_QUEUES:
            raise QueueNotFound(
                f"Queue {name!r} is not declared in TQ['QUEUES'] and "
                "TQ['CREATE_MISSING_QUEUES'] is False."
            )
        return Destination(queue=name)
    if queue.broadcast:
        return Destination(queue=name, exchange=queue.exchange, routing_key=name)
    return Destination(queue=name)


def _through_exchange(queue: str | None, exchange: str | None, key: str | None) -> Destination:
    topology = tq_settings.QUEUES
    declared = topology.get(queue) if queue else None
    exchange = exchange or (declared.exchange if declared else None) or topology.default_exchange
    if key is None:
        key = (declared.routing_key or declared.name) if declared else None
    if key is None:
        default = topology.get(tq_settings.DEFAULT_QUEUE)
        key = tq_settings.DEFAULT_ROUTING_KEY or (
            (default.routing_key or default.name) if default else tq_settings.DEFAULT_QUEUE
        )
    reached = topology.bound(exchange, key)
    if reached:
        names = [q.name for q in reached]
        first = queue if queue is not None and queue in names else names[0]
        return Destination(queue=first, exchange=exchange, routing_key=key)
    legacy = exchange == topology.default_exchange and topology.exchange_type(exchange) == "direct"
    if legacy and queue in (None, key):
        return _named_queue(key)  # a routing key naming its queue, as before exchanges
    if not topology.is_declared_exchange(exchange):
        raise QueueNotFound(
            f"Exchange {exchange!r} is not declared: no queue of TQ['QUEUES'] is bound to it, "
            f"so routing key {key!r} reaches no queue."
        )
    raise QueueNotFound(
        f"Routing key {key!r} on exchange {exchange!r} ({topology.exchange_type(exchange)}) "
        "reaches no queue declared in TQ['QUEUES']."
    )


def destination(options: Mapping[str, Any]) -> Destination | None:
    """Return where ``options`` (``queue``, ``exchange``, ``routing_key``) send a message.

    ``None`` when they name none of the three (the next source of options decides). Raises
    :class:`QueueNotFound` for a queue or key that reaches nothing declared.
    """
    queue, exchange, key = options.get("queue"), options.get("exchange"), options.get("routing_key")
    if not (queue or exchange or key):
        return None
    if exchange or key:
        return _through_exchange(queue or None, exchange or None, key or None)
    return _named_queue(str(queue))


def default_destination() -> Destination:
    """Return where a message goes when nothing names a destination: ``DEFAULT_QUEUE``."""
    if tq_settings.DEFAULT_ROUTING_KEY:
        return _through_exchange(None, None, tq_settings.DEFAULT_ROUTING_KEY)
    return _named_queue(tq_settings.DEFAULT_QUEUE)
