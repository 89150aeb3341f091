"""``TQ["QUEUES"]``: the declared queues, the exchanges they are bound to, and who a key reaches.

A queue is bound to one exchange with one binding key, as in AMQP (and Celery's ``task_queues``):

* ``direct`` — a message reaches the queues whose binding key equals its routing key;
* ``topic`` — binding keys are dot-separated words where ``*`` matches one word and ``#`` zero or
  more (``feed.#`` matches ``feed``, ``feed.import`` and ``feed.import.rss``);
* ``fanout`` — every bound queue gets a copy, whatever the key.

A :func:`Broadcast` queue is a fanout exchange of its own whose copies are per worker: each
worker consuming it consumes ``<name>.<worker hostname>`` instead (see :meth:`Topology.consumed`).

This module holds only values: :class:`Topology` is built from the setting by ``conf.py`` and
answers questions; RabbitMQ declares it for real (``broker/``), the transports without exchanges
emulate it at publish (``broker/exchange_emulation.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, replace
from typing import Any

from django.core.exceptions import ImproperlyConfigured

EXCHANGE_TYPES = ("direct", "topic", "fanout")
#: what a queue entry of ``TQ["QUEUES"]`` may say about itself
QUEUE_KEYS = frozenset({"exchange", "exchange_type", "routing_key", "broadcast"})
#: characters a queue or exchange name may use (as ``routing.QUEUE_NAME``)
NAME = re.compile(r"^[\w.:@-]+$")
#: characters a binding key may use: words of name characters, ``*`` and ``#``, dot-separated
BINDING_KEY = re.compile(r"^([\w:@-]+|\*|#)(\.([\w:@-]+|\*|#))*$")


@dataclass(frozen=True, slots=True)
class Queue:
    """One declared queue: its exchange, the exchange's type and its binding key.

    ``exchange=None`` is ``TQ["DEFAULT_EXCHANGE"]`` (whose type is ``DEFAULT_EXCHANGE_TYPE``);
    ``routing_key=None`` is the queue's own name. A fanout queue ignores its binding key.
    """

    name: str
    _: KW_ONLY
    exchange: str | None = None
    exchange_type: str | None = None
    routing_key: str | None = None
    broadcast: bool = False


def Broadcast(name: str, *, exchange: str | None = None) -> Queue:
    """Return a queue every worker consuming it gets its own copy of (a fanout exchange)."""
    return Queue(name, exchange=exchange or name, exchange_type="fanout", broadcast=True)


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """Return whether ``routing_key`` matches the AMQP topic ``binding_key`` (``*`` one word, ``#`` any)."""
    return _match(binding_key.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[skip:]) for skip in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


@dataclass(frozen=True, slots=True)
class Topology:
    """The declared queues, every one with its exchange, type and binding key filled in."""

    queues: tuple[Queue, ...] = ()
    _: KW_ONLY
    default_exchange: str = "default"
    default_exchange_type: str = "direct"

    def get(self, name: str) -> Queue | None:
        """Return the declared queue ``name``, or ``None``."""
        for queue in self.queues:
            if queue.name == name:
                return queue
        return None

    @property
    def names(self) -> list[str]:
        """Return the names of the declared queues, in their order."""
        return [queue.name for queue in self.queues]

    def exchange_type(self, exchange: str) -> str:
        """Return the type of ``exchange`` (the default exchange's, or that of its queues)."""
        for queue in self.queues:
            if queue.exchange == exchange and queue.exchange_type:
                return queue.exchange_type
        return self.default_exchange_type if exchange == self.default_exchange else "direct"

    def is_declared_exchange(self, exchange: str) -> bool:
        """Return whether ``exchange`` is the default exchange or one a queue is bound to."""
        return exchange == self.default_exchange or any(q.exchange == exchange for q in self.queues)

    def bound(self, exchange: str, routing_key: str) -> list[Queue]:
        """Return the declared queues a message sent to ``exchange`` with ``routing_key`` reaches."""
        kind = self.exchange_type(exchange)
        reached = []
        for queue in self.queues:
            if queue.exchange != exchange:
                continue
            key = queue.routing_key or queue.name
            if (
                kind == "fanout"
                or (kind == "direct" and key == routing_key)
                or (kind == "topic" and topic_matches(key, routing_key))
            ):
                reached.append(queue)
        return reached

    def broadcast_of(self, name: str) -> Queue | None:
        """Return the Broadcast queue ``name`` is a worker's copy of (``<name>.<hostname>``)."""
        if self.get(name) is not None:
            return None
        for queue in self.queues:
            if queue.broadcast and name.startswith(f"{queue.name}."):
                return queue
        return None

    def consumed(self, names: Iterable[str], hostname: str) -> list[str]:
        """Return the queues a worker called ``hostname`` consumes for ``names``.

        A Broadcast queue becomes the worker's own copy, ``<name>.<hostname>``.
        """
        return [
            copy_name(name, hostname) if (q := self.get(name)) and q.broadcast else name
            for name in names
        ]


def copy_name(broadcast: str, hostname: str) -> str:
    """Return the name of worker ``hostname``'s copy of the Broadcast queue ``broadcast``."""
    return f"{broadcast}.{hostname}"


def _entry(key: str, name: Any, options: Any) -> Queue:
    if isinstance(options, Queue):
        return options
    if not isinstance(name, str) or not NAME.match(name):
        raise ImproperlyConfigured(f"TQ[{key!r}]: {name!r} is not a valid queue name.")
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(
            f"TQ[{key!r}][{name!r}] must be a dict of {', '.join(sorted(QUEUE_KEYS))}, "
            f"got {options!r}."
        )
    unknown = sorted(set(options) - QUEUE_KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"TQ[{key!r}][{name!r}]: unknown key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(sorted(QUEUE_KEYS))}."
        )
    if options.get("broadcast"):
        extra = sorted(set(options) - {"broadcast", "exchange"})
        if extra:
            raise ImproperlyConfigured(
                f"TQ[{key!r}][{name!r}]: a broadcast queue has a fanout exchange of its own and "
                f"takes only 'exchange', not {', '.join(extra)}."
            )
        return Broadcast(name, exchange=options.get("exchange"))
    return Queue(
        name,
        exchange=options.get("exchange"),
        exchange_type=options.get("exchange_type"),
        routing_key=options.get("routing_key"),
    )


def _entries(key: str, value: Any) -> list[Queue]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [_entry(key, name, options) for name, options in value.items()]
    if isinstance(value, list | tuple):
        return [item if isinstance(item, Queue) else _entry(key, item, None) for item in value]
    raise ImproperlyConfigured(
        f"TQ[{key!r}] must be a dict of queue name -> options, or a list of queue names, "
        f"Queue(...) and Broadcast(...), got {value!r}."
    )


def _check(key: str, queue: Queue) -> None:
    where = f"TQ[{key!r}][{queue.name!r}]"
    if not NAME.match(queue.name):
        raise ImproperlyConfigured(f"TQ[{key!r}]: {queue.name!r} is not a valid queue name.")
    if not isinstance(queue.exchange, str) or not NAME.match(queue.exchange):
        raise ImproperlyConfigured(f"{where}: exchange {queue.exchange!r} is not a valid name.")
    if queue.exchange_type not in EXCHANGE_TYPES:
        raise ImproperlyConfigured(
            f"{where}: exchange_type must be one of {EXCHANGE_TYPES}, got {queue.exchange_type!r}."
        )
    routing_key = queue.routing_key
    if routing_key is not None and (
        not isinstance(routing_key, str) or not BINDING_KEY.match(routing_key)
    ):
        raise ImproperlyConfigured(
            f"{where}: routing_key {routing_key!r} must be dot-separated words, '*' or '#'."
        )
    if (
        queue.exchange_type == "direct"
        and routing_key
        and ("*" in routing_key or "#" in routing_key)
    ):
        raise ImproperlyConfigured(
            f"{where}: routing_key {routing_key!r} has wildcards, which only a topic exchange "
            f"matches (exchange {queue.exchange!r} is direct): set exchange_type to 'topic'."
        )


def parse_topology(
    key: str, value: Any, *, default_exchange: str, default_exchange_type: str
) -> Topology:
    """Return the :class:`Topology` of setting ``value``; raise ``ImproperlyConfigured`` if bad."""
    if default_exchange_type not in EXCHANGE_TYPES:
        raise ImproperlyConfigured(
            f"TQ['DEFAULT_EXCHANGE_TYPE'] must be one of {EXCHANGE_TYPES}, "
            f"got {default_exchange_type!r}."
        )
    queues: list[Queue] = []
    types: dict[str, tuple[str, str]] = {default_exchange: (default_exchange_type, "the default")}
    for entry in _entries(key, value):
        exchange = entry.exchange or default_exchange
        kind = entry.exchange_type or (
            default_exchange_type if exchange == default_exchange else "direct"
        )
        queue = replace(entry, exchange=exchange, exchange_type=kind)
        _check(key, queue)
        if any(q.name == queue.name for q in queues):
            raise ImproperlyConfigured(f"TQ[{key!r}] declares queue {queue.name!r} twice.")
        known, by = types.setdefault(exchange, (kind, f"queue {queue.name!r}"))
        if known != kind:
            raise ImproperlyConfigured(
                f"TQ[{key!r}][{queue.name!r}]: exchange {exchange!r} is {kind} here but {known} "
                f"for {by}; an exchange has one type."
            )
        queues.append(queue)
    return Topology(
        tuple(queues),
        default_exchange=default_exchange,
        default_exchange_type=default_exchange_type,
    )
