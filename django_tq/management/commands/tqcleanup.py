"""``python manage.py tqcleanup [--older-than AGE]``: expire results now (parse, call
:func:`django_tq.cleanup.expire`, print what was deleted)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils.dateparse import parse_duration

from django_tq.cleanup import expire
from django_tq.conf import tq_settings

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Command(BaseCommand):
    help = (
        "Delete results finished longer ago than TQ['RESULT_EXPIRES'] (or --older-than), with "
        "old revocations and queue-depth samples: what workers do every minute, all at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=age,
            help="an age: 90s, 30m, 12h, 7d, 2w, a number of seconds, or 'P7D' (ISO 8601) "
            f"(default: TQ['RESULT_EXPIRES'], {tq_settings.RESULT_EXPIRES})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = options["older_than"]
        if older_than is None and tq_settings.RESULT_EXPIRES is None:
            self.stdout.write(
                "TQ['RESULT_EXPIRES'] is None: results never expire. Nothing deleted."
            )
            return
        expired = expire(older_than, batches=None)
        self.stdout.write(
            self.style.SUCCESS(
                f"Deleted {expired.results:,} result(s), {expired.revocations:,} revocation(s) "
                f"and {expired.samples:,} queue-depth sample(s) older than "
                f"{older_than or tq_settings.RESULT_EXPIRES}."
            )
        )


def age(value: str) -> dt.timedelta:
    """Parse ``--older-than``: ``90s``, ``30m``, ``12h``, ``7d``, ``2w``, seconds, or ISO 8601."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
    parsed = (
        dt.timedelta(seconds=float(match[1]) * UNITS[match[2] or "s"])
        if match
        else parse_duration(value)
    )
    if parsed is None or parsed < dt.timedelta(0):
        raise argparse.ArgumentTypeError(f"not an age: {value!r} (try 7d, 12h, 30m or 3600)")
    return parsed
