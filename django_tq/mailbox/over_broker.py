"""The broker mailbox (Redis, RabbitMQ): commands broadcast on the fanout channel, replies sent back.

:func:`send` opens the command's reply box, then publishes the signed command as JSON on the
``control`` topic of :mod:`django_tq.broker.fanout`; every worker parent is subscribed
(:class:`BrokerInbox`), runs the commands meant for it and sends its reply to the box, which
:func:`collect` reads. Nothing touches the database: a worker answers while the database is
slow, and a command never outlives its TTL.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import replace
from typing import Any

from django.utils import timezone

from django_tq.broker.fanout import Fanout
from django_tq.mailbox.command import REPLY_PAUSE, Command, Reply, is_verified, new_command, sign

logger = logging.getLogger("django_tq.control")

#: the topic commands travel on
TOPIC = "control"


def _envelope(command: Command) -> str:
    return json.dumps(
        {
            "command_id": command.command_id,
            "name": command.name,
            "arguments": command.arguments,
            "destination": command.destination,
            "sender": command.sender,
            "created_at": command.created_at.isoformat(),
            "expires_at": command.expires_at.isoformat(),
            "signature": sign(command),
        },
        default=str,
    )


def _read(text: str) -> tuple[Command, str] | None:
    """Return the command in ``text`` and its signature, or None (logged) when it is not one."""
    try:
        data = json.loads(text)
        command = Command(
            pk=0,
            command_id=str(data["command_id"]),
            name=str(data["name"]),
            arguments=dict(data.get("arguments") or {}),
            destination=list(data["destination"]) if data.get("destination") else None,
            sender=str(data.get("sender", "")),
            created_at=dt.datetime.fromisoformat(data["created_at"]),
            expires_at=dt.datetime.fromisoformat(data["expires_at"]),
        )
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning("Ignored a control message that is not a command: %r (%s)", text[:200], exc)
        return None
    return command, str(data.get("signature", ""))


def send(
    fanout: Fanout,
    name: str,
    arguments: dict[str, Any] | None,
    destination: list[str] | None,
    *,
    ttl: float,
    reply: bool,
) -> Command:
    """Publish command ``name``; with ``reply``, open the box its replies arrive in first."""
    command = new_command(name, arguments, destination, now=timezone.now(), ttl=ttl)
    replies = fanout.reply_box(command.command_id) if reply else None
    try:
        fanout.publish(TOPIC, _envelope(command))
    except Exception:
        if replies is not None:
            replies.close()
        raise
    return replace(command, replies=replies)


def collect(command: Command, *, timeout: float, limit: int | None) -> list[Reply]:
    """Read the command's reply box for up to ``timeout`` seconds, or until ``limit`` came."""
    box = command.replies
    if box is None:
        return []
    deadline = time.monotonic() + timeout
    found: dict[str, Any] = {}
    try:
        while True:
            for text in box.poll():
                try:
                    data = json.loads(text)
                    found.setdefault(str(data["hostname"]), data["payload"])  # first answer
                except (ValueError, TypeError, KeyError):
                    logger.warning("Ignored a reply that is not one: %r", text[:200])
            if (limit is not None and len(found) >= limit) or time.monotonic() >= deadline:
                break
            time.sleep(REPLY_PAUSE)
    finally:
        box.close()
    return [Reply(hostname=hostname, payload=found[hostname]) for hostname in sorted(found)]


class BrokerInbox:
    """A worker parent's subscription to the ``control`` topic."""

    def __init__(self, hostname: str, fanout: Fanout) -> None:
        self.hostname = hostname
        self.fanout = fanout
        self.subscriber = fanout.subscribe(TOPIC)

    def poll(self, now: dt.datetime | None = None) -> list[Command]:
        """Return the unexpired, verified commands for this worker that arrived since the last poll."""
        now = now or timezone.now()
        commands = []
        for text in self.subscriber.poll():
            read = _read(text)
            if read is None:
                continue
            command, signature = read
            if command.expires_at <= now or not command.is_for(self.hostname):
                continue
            if is_verified(command, signature):
                commands.append(command)
        return commands

    def reply(self, command: Command, payload: Any) -> None:
        """Send this worker's answer to the command's reply box."""
        self.fanout.reply(
            command.command_id,
            json.dumps({"hostname": self.hostname, "payload": payload}, default=str),
        )

    def close(self) -> None:
        """Unsubscribe."""
        self.subscriber.close()
