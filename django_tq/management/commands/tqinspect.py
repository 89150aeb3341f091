"""``python manage.py tqinspect ping|active|reserved|scheduled|registered|stats|revoked|active_queues|conf``:
ask running workers (parse, call :func:`django_tq.control.inspect`, print); ``scheduled`` also
lists what waits for its ETA in no worker (:func:`django_tq.waiting.scheduled`)."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_tq import control, waiting

METHODS = (
    "ping",
    "active",
    "reserved",
    "scheduled",
    "registered",
    "stats",
    "revoked",
    "active_queues",
    "conf",
)


#: ``scheduled --json``: the key of the messages that wait in no worker (never a worker's name)
WAITING = "(waiting in the broker)"


def destination(value: str | None) -> list[str] | None:
    """Parse ``-d w1,w2`` (None: every worker)."""
    if not value:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


class Command(BaseCommand):
    help = (
        "Ask the running workers what they do: ping, active (running tasks), reserved (held to "
        "run next), scheduled (held until their ETA), registered (task names), stats, revoked, "
        "active_queues, conf. Exit status 1 when no worker answers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("method", choices=METHODS)
        parser.add_argument(
            "-d", "--destination", help="comma-separated worker names (default: all)"
        )
        parser.add_argument(
            "-t", "--timeout", type=float, default=2.0, help="seconds to wait for replies (2)"
        )
        parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")

    def handle(self, *args: Any, **options: Any) -> None:
        inspector = control.inspect(destination(options["destination"]), options["timeout"])
        replies: dict[str, Any] = getattr(inspector, options["method"])()
        waits = waiting.scheduled() if options["method"] == "scheduled" else None
        if options["json"]:
            document = replies if waits is None else {**replies, WAITING: waits}
            self.stdout.write(json.dumps(document, indent=2, default=str))
        else:
            if waits is not None:
                self.stdout.write(self.style.SUCCESS(f"-> {WAITING}: ") + _summary(waits))
                for task in waits:
                    self.stdout.write(f"    {_held(task)} ({task['where']})")
            for hostname, reply in replies.items():
                self.stdout.write(self.style.SUCCESS(f"-> {hostname}: ") + _summary(reply))
                for line in _details(options["method"], reply):
                    self.stdout.write(f"    {line}")
            missing = _missing(options["destination"], replies)
            if missing:
                self.stdout.write(self.style.WARNING(f"No reply from: {', '.join(missing)}"))
            self.stdout.write(f"{len(replies)} worker(s) answered.")
        if not replies:
            self.stderr.write(f"No worker answered within {options['timeout']:g}s.")
            sys.exit(1)


def _missing(requested: str | None, replies: dict[str, Any]) -> list[str]:
    return [name for name in destination(requested) or [] if name not in replies]


def _summary(reply: Any) -> str:
    if isinstance(reply, dict) and "error" in reply:
        return f"error: {reply['error']}"
    if isinstance(reply, list):
        return f"{len(reply)} item(s)" if reply else "none"
    if isinstance(reply, dict):
        return ""
    return str(reply)


def _details(method: str, reply: Any) -> list[str]:
    if method == "active" and isinstance(reply, list):
        return [
            f"{task['name']}[{task['id']}] pid {task['pid']} running {task['runtime']}s "
            f"args={task['args']} kwargs={task['kwargs']}"
            for task in reply
        ]
    if method in ("reserved", "scheduled") and isinstance(reply, list):
        return [_held(task) for task in reply if isinstance(task, dict)]
    if isinstance(reply, list):
        return [str(item) for item in reply]
    if isinstance(reply, dict) and "error" not in reply:
        return [f"{key}: {json.dumps(value, default=str)}" for key, value in reply.items()]
    return []


def _held(task: dict[str, Any]) -> str:
    if task.get("eta"):
        when = f" eta {task['eta']}"
    elif task.get("rate_limited_until"):
        when = f" rate-limited until {task['rate_limited_until']}"
    else:
        when = ""
    pid = f" pid {task['pid']}" if task.get("pid") is not None else ""
    return (
        f"{task.get('name')}[{task.get('id')}]{pid} queue {task.get('queue')}"
        f"{when} args={task.get('args')} kwargs={task.get('kwargs')}"
    )
