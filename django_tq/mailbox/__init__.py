"""Remote control's mailbox: commands to running workers and their replies.

:func:`broadcast` sends a command to every worker, or to the ones named, and collects the
replies for a timeout; the parent process of each worker reads its commands every tick
(:class:`Inbox`) and answers, not a child, so a worker whose children are all busy still
answers. How a command travels depends on ``TQ["BROKER_URL"]``:

* Redis and RabbitMQ: on the broker's fanout channel (:mod:`django_tq.mailbox.over_broker`);
* ``django://``: as rows of the database (:mod:`django_tq.mailbox.rows`), waking the workers
  with ``NOTIFY`` on PostgreSQL and read every tick elsewhere.

Commands carry an id, a destination, a TTL and, with ``TQ["SIGNING"]``, a signature a worker
checks before it runs anything (:mod:`django_tq.mailbox.command`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

import django_tq.mailbox.over_broker as over_broker
import django_tq.mailbox.rows as rows
from django_tq.broker import Broker, get_broker
from django_tq.broker.fanout import Fanout, open_fanout, shared_fanout
from django_tq.conf import tq_settings
from django_tq.mailbox.command import (
    CONTENT_TYPE,
    DEFAULT_TIMEOUT,
    DEFAULT_TTL,
    Command,
    Reply,
)
from django_tq.models import WorkerState
from django_tq.models.workers import LOST_AFTER

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TTL",
    "Command",
    "Inbox",
    "Reply",
    "broadcast",
    "collect",
    "delete_expired",
    "expected_replies",
    "send",
]

delete_expired = rows.delete_expired


def _fanout(broker: Broker, *, shared: bool) -> Fanout | None:
    """Return the channel commands travel on: the broker's fanout, or on ``django://`` NOTIFY
    on the mailbox's PostgreSQL database (None elsewhere: rows read every tick)."""
    prefix = tq_settings.CONTROL_EXCHANGE
    alias = rows.alias() if broker.is_database else None
    if shared:
        return shared_fanout(broker, prefix=prefix, alias=alias)
    return open_fanout(broker, prefix=prefix, alias=alias)


def send(
    name: str,
    arguments: dict[str, Any] | None = None,
    *,
    destination: list[str] | None = None,
    ttl: float = DEFAULT_TTL,
    reply: bool = True,
) -> Command:
    """Broadcast command ``name`` to every worker, or to the workers named in ``destination``."""
    broker = get_broker()
    fanout = _fanout(broker, shared=True)
    if broker.is_database or fanout is None or not fanout.supports_replies:
        return rows.send(name, arguments, destination, ttl=ttl, wakeups=fanout)
    return over_broker.send(fanout, name, arguments, destination, ttl=ttl, reply=reply)


def collect(
    command: Command, *, timeout: float = DEFAULT_TIMEOUT, limit: int | None = None
) -> list[Reply]:
    """Wait up to ``timeout`` seconds for replies; return early once ``limit`` have come."""
    if command.pk:
        return rows.collect(command, timeout=timeout, limit=limit)
    return over_broker.collect(command, timeout=timeout, limit=limit)


def expected_replies(destination: list[str] | None) -> int:
    """Return how many workers should answer: those named, or those alive now."""
    if destination is not None:
        return len(destination)
    return WorkerState.objects.filter(
        stopped_at__isnull=True, last_heartbeat__gt=timezone.now() - LOST_AFTER
    ).count()


def broadcast(
    name: str,
    arguments: dict[str, Any] | None = None,
    *,
    destination: list[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    reply: bool = True,
) -> list[Reply]:
    """Send a command and (``reply``) return the replies that came within ``timeout``."""
    limit = expected_replies(destination)
    command = send(
        name, arguments, destination=destination, ttl=max(DEFAULT_TTL, timeout), reply=reply
    )
    if not reply:
        return []
    return collect(command, timeout=timeout, limit=limit or None)


class Inbox:
    """A worker parent's view of the mailbox: the commands for it sent since it started."""

    def __init__(self, hostname: str, broker: Broker | None = None) -> None:
        self.hostname = hostname
        broker = broker or get_broker()
        fanout = _fanout(broker, shared=False)
        self._inbox: rows.RowInbox | over_broker.BrokerInbox
        if broker.is_database or fanout is None:
            wakeups = fanout.subscribe(rows.TOPIC) if fanout is not None else None
            self._inbox = rows.RowInbox(hostname, wakeups)
        else:
            self._inbox = over_broker.BrokerInbox(hostname, fanout)

    @property
    def transport(self) -> str:
        """Return how commands reach this inbox: ``broker``, ``notify`` or ``poll``."""
        if isinstance(self._inbox, over_broker.BrokerInbox):
            return "broker"
        return "notify" if self._inbox.wakeups is not None else "poll"

    def poll(self, now: dt.datetime | None = None) -> list[Command]:
        """Return the unexpired commands for this worker that arrived since the last poll."""
        return self._inbox.poll(now)

    def reply(self, command: Command, payload: Any) -> None:
        """Send this worker's answer to ``command``."""
        self._inbox.reply(command, payload)

    def close(self) -> None:
        """Stop listening."""
        self._inbox.close()
