"""A remote-control command and a reply, as both mailboxes carry them, and their signature.

With ``TQ["SIGNING"]`` on, a command is signed like a task message (HMAC of ``SECRET_KEY``, the
fallbacks accepted) over its id, name, destination, sender, dates and arguments, and a worker
refuses, with a log line, a command whose signature does not verify: a row or a broker message
written by anything but django_tq's own code runs nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings
from django.core.signing import BadSignature

from django_tq import signing
from django_tq.broker.fanout import ReplyBox
from django_tq.conf import tq_settings

logger = logging.getLogger("django_tq.control")

#: seconds a command stays readable (a worker that starts later never sees it)
DEFAULT_TTL = 10.0
#: seconds :func:`collect` waits for replies by default
DEFAULT_TIMEOUT = 2.0
CONTENT_TYPE = "application/json"
#: seconds between two reads of a reply box that had nothing
REPLY_PAUSE = 0.05


class Signed(Protocol):
    """What a signature covers (a :class:`Command`, or a ``ControlCommand`` row)."""

    @property
    def command_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def arguments(self) -> Any: ...
    @property
    def destination(self) -> Any: ...
    @property
    def sender(self) -> str: ...
    @property
    def created_at(self) -> dt.datetime: ...
    @property
    def expires_at(self) -> dt.datetime: ...


@dataclass(frozen=True, kw_only=True)
class Command:
    """A command as a worker reads it."""

    pk: int  #: the row's id in the database mailbox; 0 over the broker
    command_id: str
    name: str
    arguments: dict[str, Any]
    destination: list[str] | None
    sender: str
    created_at: dt.datetime
    expires_at: dt.datetime
    #: over the broker, for the sender: where the replies arrive (opened before sending)
    replies: ReplyBox | None = field(default=None, compare=False, repr=False)

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


def new_command(
    name: str,
    arguments: dict[str, Any] | None,
    destination: list[str] | None,
    *,
    now: dt.datetime,
    ttl: float,
) -> Command:
    """Return a new command (not sent): a fresh id, this process as the sender."""
    return Command(
        pk=0,
        command_id=uuid.uuid4().hex,
        name=name,
        arguments=dict(arguments or {}),
        destination=list(destination) if destination is not None else None,
        sender=f"{socket.gethostname()}:{os.getpid()}",
        created_at=now,
        expires_at=now + dt.timedelta(seconds=ttl),
    )


def _signed_parts(command: Signed) -> tuple[dict[str, Any], str]:
    headers = {
        "command_id": command.command_id,
        "name": command.name,
        "destination": command.destination,
        "sender": command.sender,
        "created_at": command.created_at.isoformat(),
        "expires_at": command.expires_at.isoformat(),
    }
    return headers, json.dumps(command.arguments, sort_keys=True, separators=(",", ":"))


def sign(command: Signed) -> str:
    """Return the signature of ``command`` under ``TQ["SIGNING"]``, else ``""``."""
    if not tq_settings.SIGNING:
        return ""
    headers, body = _signed_parts(command)
    return signing.signature(headers, body, CONTENT_TYPE, secret=settings.SECRET_KEY)


def is_verified(command: Signed, signature: str) -> bool:
    """Return whether a worker may run ``command`` (always, unless ``TQ["SIGNING"]``); log a refusal."""
    if not tq_settings.SIGNING:
        return True
    headers, body = _signed_parts(command)
    try:
        signing.verify({**headers, signing.SIGNATURE_HEADER: signature}, body, CONTENT_TYPE)
    except BadSignature as exc:
        logger.warning(
            "Refused control command %r [%s] from %r: %s",
            command.name,
            command.command_id,
            command.sender,
            exc,
        )
        return False
    return True
