"""``python manage.py tqevents [--json] [--count N] [--duration S]``: print the workers' live
events as they come (subscribe with :class:`django_tq.events.EventReceiver`, print; Ctrl-C
ends it)."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tq import events


class Command(BaseCommand):
    help = (
        "Print the live task and worker events of workers started with -E (Redis, RabbitMQ, "
        "django:// on PostgreSQL), one line each, until Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="one JSON object per line")
        parser.add_argument("--count", type=int, help="stop after N events")
        parser.add_argument("--duration", type=float, help="stop after S seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            receiver = events.EventReceiver()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        deadline = None if options["duration"] is None else time.monotonic() + options["duration"]
        count = options["count"]
        seen = 0
        # Ctrl-C and SIGTERM stop it cleanly, also when it was started with SIGINT ignored (a
        # background job, a supervisor): Python then installs no KeyboardInterrupt of its own.
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.stderr.write("Listening for events (Ctrl-C to stop)…")
        try:
            while deadline is None or time.monotonic() < deadline:
                for event in receiver.poll(timeout=0.5):
                    line = (
                        json.dumps(event, default=str)
                        if options["json"]
                        else events.describe(event)
                    )
                    self.stdout.write(line)
                    self.stdout.flush()
                    seen += 1
                    if count is not None and seen >= count:
                        return
        except KeyboardInterrupt:
            self.stderr.write(f"\nStopped after {seen} event(s).")
        finally:
            receiver.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
