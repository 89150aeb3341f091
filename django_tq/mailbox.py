"""Remote control's mailbox: commands to running workers and their replies, in the database.

One mechanism for every transport: :func:`send` writes a ``ControlCommand`` row; the parent
process of every worker it is meant for reads new rows each tick (:class:`Inbox`, about twice a
second, one indexed query), runs the command and writes a ``ControlReply``; :func:`collect`
waits for the replies. The parent answers, not a child, so a worker whose children are all busy
still answers. Using the database rather than a broker exchange means control works the same on
``django://``, Redis and RabbitMQ, survives a broker restart, and needs nothing the workers do
not already have (their heartbeats live in the same database).

With ``TQ["SIGNING"]`` on, a command is signed like a task message (HMAC of ``SECRET_KEY``, the
fallbacks accepted) and a worker refuses, with a log line, a command whose signature does not
verify: a row written by anything but django_tq's own code runs nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signing import BadSignature
from django.utils import timezone

from django_tq import signing
from django_tq.conf import tq_settings
from django_tq.models import ControlCommand, ControlReply, WorkerState
from django_tq.models.workers import LOST_AFTER

logger = logging.getLogger("django_tq.control")

#: seconds a command stays readable (a worker that starts later never sees it)
DEFAULT_TTL = 10.0
#: seconds :func:`collect` waits for replies by default
DEFAULT_TIMEOUT = 2.0
CONTENT_TYPE = "application/json"


@dataclass(frozen=True, kw_only=True)
class Command:
    """A command as a worker reads it."""

    pk: int
    command_id: str
    name: str
    arguments: dict[str, Any]
    destination: list[str] | None
    sender: str
    created_at: dt.datetime
    expires_at: dt.datetime

    def is_for(self, hostname: str) -> bool:
        """Return whether the worker called ``hostname`` is meant to run it."""
        return self.destination is None or hostname in self.destination


@dataclass(frozen=True, kw_only=True)
class Reply:
    """What one worker answered."""

    hostname: str
    payload: Any

    @property
    def error(self) -> str | None:
        """Return the error the worker reported, if any."""
        if isinstance(self.payload, dict) and "error" in self.payload:
            return str(self.payload["error"])
        return None


def _signed_parts(row: ControlCommand) -> tuple[dict[str, Any], str]:
    headers = {
        "command_id": row.command_id,
        "name": row.name,
        "destination": row.destination,
        "sender": row.sender,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
    }
    return headers, json.dumps(row.arguments, sort_keys=True, separators=(",", ":"))


def send(
    name: str,
    arguments: dict[str, Any] | None = None,
    *,
    destination: list[str] | None = None,
    ttl: float = DEFAULT_TTL,
) -> Command:
    """Broadcast command ``name`` to every worker, or to the workers named in ``destination``."""
    now = timezone.now()
    row = ControlCommand(
        command_id=uuid.uuid4().hex,
        name=name,
        arguments=arguments or {},
        destination=list(destination) if destination is not None else None,
        sender=f"{socket.gethostname()}:{os.getpid()}",
        created_at=now,
        expires_at=now + dt.timedelta(seconds=ttl),
    )
    if tq_settings.SIGNING:
        headers, body = _signed_parts(row)
        row.signature = signing.signature(headers, body, CONTENT_TYPE, secret=settings.SECRET_KEY)
    row.save()
    return _command(row)


def _command(row: ControlCommand) -> Command:
    return Command(
        pk=row.pk,
        command_id=row.command_id,
        name=row.name,
        arguments=row.arguments if isinstance(row.arguments, dict) else {},
        destination=row.destination if isinstance(row.destination, list) else None,
        sender=row.sender,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def expected_replies(destination: list[str] | None) -> int:
    """Return how many workers should answer: those named, or those alive now."""
    if destination is not None:
        return len(destination)
    return WorkerState.objects.filter(
        stopped_at__isnull=True, last_heartbeat__gt=timezone.now() - LOST_AFTER
    ).count()


def collect(
    command: Command, *, timeout: float = DEFAULT_TIMEOUT, limit: int | None = None
) -> list[Reply]:
    """Wait up to ``timeout`` seconds for replies; return early once ``limit`` have come."""
    deadline = time.monotonic() + timeout
    replies = ControlReply.objects.filter(command__command_id=command.command_id)
    while True:
        found = list(replies.order_by("hostname").values_list("hostname", "payload"))
        if (limit is not None and len(found) >= limit) or time.monotonic() >= deadline:
            return [Reply(hostname=hostname, payload=payload) for hostname, payload in found]
        time.sleep(0.05)


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
    command = send(name, arguments, destination=destination, ttl=max(DEFAULT_TTL, timeout))
    if not reply:
        return []
    return collect(command, timeout=timeout, limit=limit or None)


class Inbox:
    """A worker parent's view of the mailbox: the commands for it sent since it started."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        latest = ControlCommand.objects.order_by("-id").values_list("id", flat=True).first()
        self.last_id: int = latest or 0

    def poll(self, now: dt.datetime | None = None) -> list[Command]:
        """Return the unexpired commands for this worker that arrived since the last poll."""
        rows = list(
            ControlCommand.objects.filter(
                id__gt=self.last_id, expires_at__gt=now or timezone.now()
            ).order_by("id")
        )
        if rows:
            self.last_id = rows[-1].id
        commands = []
        for row in rows:
            command = _command(row)
            if not command.is_for(self.hostname):
                continue
            if tq_settings.SIGNING and not self._verified(row):
                continue
            commands.append(command)
        return commands

    def _verified(self, row: ControlCommand) -> bool:
        headers, body = _signed_parts(row)
        try:
            signing.verify({**headers, signing.SIGNATURE_HEADER: row.signature}, body, CONTENT_TYPE)
        except BadSignature as exc:
            logger.warning(
                "Refused control command %r [%s] from %r: %s",
                row.name,
                row.command_id,
                row.sender,
                exc,
            )
            return False
        return True

    def reply(self, command: Command, payload: Any) -> None:
        """Store this worker's answer to ``command``."""
        ControlReply.objects.bulk_create(  # one INSERT; a second answer is dropped
            [ControlReply(command_id=command.pk, hostname=self.hostname, payload=payload)],
            ignore_conflicts=True,
        )


def delete_expired(now: dt.datetime | None = None) -> int:
    """Delete commands (and their replies) that expired over a minute ago; return how many."""
    before = (now or timezone.now()) - dt.timedelta(minutes=1)
    deleted, _ = ControlCommand.objects.filter(expires_at__lt=before).delete()
    return deleted
