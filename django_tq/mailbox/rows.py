"""The database mailbox (``django://``): commands and replies are rows.

:func:`send` writes a ``ControlCommand`` row; the parent of every worker it is meant for reads
the new rows (:class:`RowInbox`), runs the command and writes a ``ControlReply``; :func:`collect`
waits for the replies. On PostgreSQL the sender also sends ``NOTIFY`` with the command's id
once the row is committed, and an inbox reads the table only when woken (or every
:data:`SAFETY_READ` seconds, for a wake-up lost while its connection was down); on SQLite and
MariaDB it reads the table every tick (one indexed query).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from django.db import router, transaction
from django.utils import timezone

from django_tq.broker.fanout import Fanout, Subscriber
from django_tq.mailbox.command import REPLY_PAUSE, Command, Reply, is_verified, new_command, sign
from django_tq.models import ControlCommand, ControlReply

#: the topic the wake-ups travel on
TOPIC = "control"
#: seconds between two reads of the table by an inbox woken by NOTIFY
SAFETY_READ = 5.0


def alias() -> str:
    """Return the database the mailbox's rows are written to."""
    return router.db_for_write(ControlCommand) or "default"


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


def send(
    name: str,
    arguments: dict[str, Any] | None,
    destination: list[str] | None,
    *,
    ttl: float,
    wakeups: Fanout | None,
) -> Command:
    """Write command ``name`` as a row; wake the workers through ``wakeups`` once it commits."""
    command = new_command(name, arguments, destination, now=timezone.now(), ttl=ttl)
    row = ControlCommand(
        command_id=command.command_id,
        name=command.name,
        arguments=command.arguments,
        destination=command.destination,
        sender=command.sender,
        created_at=command.created_at,
        expires_at=command.expires_at,
    )
    row.signature = sign(row)
    using = alias()
    row.save(using=using)
    if wakeups is not None:
        transaction.on_commit(
            lambda: wakeups.publish(TOPIC, command.command_id), using=using, robust=True
        )
    return _command(row)


def collect(command: Command, *, timeout: float, limit: int | None) -> list[Reply]:
    """Wait up to ``timeout`` seconds for reply rows; return early once ``limit`` have come."""
    deadline = time.monotonic() + timeout
    replies = ControlReply.objects.filter(command__command_id=command.command_id)
    while True:
        found = list(replies.order_by("hostname").values_list("hostname", "payload"))
        if (limit is not None and len(found) >= limit) or time.monotonic() >= deadline:
            return [Reply(hostname=hostname, payload=payload) for hostname, payload in found]
        time.sleep(REPLY_PAUSE)


class RowInbox:
    """A worker parent's view of the table: the commands for it sent since it started."""

    def __init__(self, hostname: str, wakeups: Subscriber | None) -> None:
        self.hostname = hostname
        self.wakeups = wakeups
        latest = ControlCommand.objects.order_by("-id").values_list("id", flat=True).first()
        self.last_id: int = latest or 0
        self._next_read = 0.0

    def _woken(self) -> bool:
        if self.wakeups is None:
            return True  # no NOTIFY here: read every tick
        try:
            woken = bool(self.wakeups.poll())
        except Exception:
            self._next_read = 0.0  # read the table as soon as the connection is back
            raise
        now = time.monotonic()
        if woken or now >= self._next_read:
            self._next_read = now + SAFETY_READ
            return True
        return False

    def poll(self, now: dt.datetime | None = None) -> list[Command]:
        """Return the unexpired commands for this worker that arrived since the last poll."""
        if not self._woken():
            return []
        rows = list(
            ControlCommand.objects.filter(
                id__gt=self.last_id, expires_at__gt=now or timezone.now()
            ).order_by("id")
        )
        if rows:
            self.last_id = rows[-1].id
        commands = [(_command(row), row) for row in rows]
        return [
            command
            for command, row in commands
            if command.is_for(self.hostname) and is_verified(row, row.signature)
        ]

    def reply(self, command: Command, payload: Any) -> None:
        """Store this worker's answer to ``command``."""
        ControlReply.objects.bulk_create(  # one INSERT; a second answer is dropped
            [ControlReply(command_id=command.pk, hostname=self.hostname, payload=payload)],
            ignore_conflicts=True,
        )

    def close(self) -> None:
        """Stop listening for wake-ups."""
        if self.wakeups is not None:
            self.wakeups.close()


def delete_expired(now: dt.datetime | None = None) -> int:
    """Delete commands (and their replies) that expired over a minute ago; return how many."""
    before = (now or timezone.now()) - dt.timedelta(minutes=1)
    deleted, _ = ControlCommand.objects.filter(expires_at__lt=before).delete()
    return deleted
