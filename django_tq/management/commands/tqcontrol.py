"""``python manage.py tqcontrol shutdown|pool_grow|…|rate_limit|time_limit``: change
running workers (parse, call :mod:`django_tq.control`, print what each worker answered)."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tq import abort, control
from django_tq.management.commands.tqinspect import destination
from django_tq.registry import registry

BROADCASTS = ("shutdown", "pool_grow", "pool_shrink", "add_consumer", "cancel_consumer")
REVOCATIONS = ("revoke", "terminate")
LIMITS = ("rate_limit", "time_limit")


class Command(BaseCommand):
    help = (
        "Control the running workers: shutdown (warm), pool_grow [N], pool_shrink [N], "
        "add_consumer QUEUE, cancel_consumer QUEUE; revoke TASK_ID…, terminate TASK_ID… "
        "[--signal SIGTERM]; rate_limit TASK RATE|reset, time_limit TASK HARD [SOFT]|reset."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("command", choices=BROADCASTS + REVOCATIONS + LIMITS)
        parser.add_argument(
            "arguments", nargs="*", help="N for pool_*, a queue for *_consumer, task ids for revoke"
        )
        parser.add_argument(
            "-d", "--destination", help="comma-separated worker names (default: all)"
        )
        parser.add_argument(
            "-t", "--timeout", type=float, default=2.0, help="seconds to wait for replies (2)"
        )
        parser.add_argument(
            "-s", "--signal", default="SIGTERM", help="terminate: SIGTERM, SIGINT, SIGUSR1, SIGKILL"
        )
        parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")

    def handle(self, *args: Any, **options: Any) -> None:
        name, values = options["command"], options["arguments"]
        if name in REVOCATIONS:
            self._revoke(values, terminate=name == "terminate", signal=options["signal"])
            return
        if name in LIMITS:
            self._limit(name, values)
            return
        arguments: dict[str, Any] = {}
        if name in ("pool_grow", "pool_shrink"):
            arguments["n"] = _count(values)
        elif name in ("add_consumer", "cancel_consumer"):
            if len(values) != 1:
                raise CommandError(f"{name} takes one queue name.")
            arguments["queue"] = values[0]
        elif values:
            raise CommandError(f"{name} takes no arguments.")
        replies = control.broadcast(
            name,
            arguments,
            destination=destination(options["destination"]),
            timeout=options["timeout"],
        )
        if options["json"]:
            self.stdout.write(json.dumps({r.hostname: r.payload for r in replies}, indent=2))
        for reply in replies if not options["json"] else []:
            if reply.error:
                self.stdout.write(self.style.ERROR(f"-> {reply.hostname}: error: {reply.error}"))
            else:
                self.stdout.write(self.style.SUCCESS(f"-> {reply.hostname}: ") + _ok(reply.payload))
        if not replies:
            self.stderr.write(f"No worker answered within {options['timeout']:g}s.")
            sys.exit(1)
        if any(reply.error for reply in replies):
            sys.exit(1)

    def _revoke(self, task_ids: list[str], *, terminate: bool, signal: str) -> None:
        if not task_ids:
            raise CommandError("Name at least one task id.")
        try:
            abort.signal_name(signal)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for task_id in task_ids:
            control.revoke(task_id, terminate=terminate, signal=signal)
        how = f"terminate with {signal}" if terminate else "revoke"
        self.stdout.write(self.style.SUCCESS(f"Asked every worker to {how}: {', '.join(task_ids)}"))

    def _limit(self, name: str, values: list[str]) -> None:
        if len(values) < 2 or (name == "rate_limit" and len(values) > 2) or len(values) > 3:
            usage = "TASK RATE|reset" if name == "rate_limit" else "TASK HARD [SOFT]|reset"
            raise CommandError(f"{name} takes {usage}.")
        task_name, reset = values[0], values[1] == "reset"
        if task_name not in registry:
            self.stderr.write(f"Warning: {task_name} is not a task this project declares.")
        try:
            if name == "rate_limit":
                control.rate_limit(task_name, None if reset else values[1])
            else:
                hard, soft = (None, None) if reset else (_seconds(values[1]), _seconds(values[2:]))
                control.time_limit(task_name, hard, soft)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        what = "reset" if reset else " ".join(values[1:])
        self.stdout.write(
            self.style.SUCCESS(
                f"{name} {task_name} {what}: every worker applies it within a second, "
                "until it is reset."
            )
        )


def _seconds(values: str | list[str]) -> float | None:
    value = values if isinstance(values, str) else (values[0] if values else None)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise CommandError(f"Not a number of seconds: {value!r}") from None


def _count(values: list[str]) -> int:
    if len(values) > 1:
        raise CommandError("pool_grow/pool_shrink take one number.")
    try:
        count = int(values[0]) if values else 1
    except ValueError:
        raise CommandError(f"Not a number of consumers: {values[0]!r}") from None
    if count < 1:
        raise CommandError("The number of consumers to add or remove must be at least 1.")
    return count


def _ok(payload: Any) -> str:
    if isinstance(payload, dict) and "ok" in payload:
        return str(payload["ok"])
    return json.dumps(payload, default=str)
