"""``python manage.py tqbeat``: run the periodic scheduler (parse options, build it, run it)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tq.beat.scheduler import Scheduler, default_name
from django_tq.management.commands.tqworker import add_liveness_argument, configure_logging


class Command(BaseCommand):
    help = (
        "Run django_tq's beat: send periodic tasks on their schedules. Run as many as you like; "
        "each occurrence is sent once."
    )
    requires_system_checks = ["django_tq"]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-n", "--name", help="name runs are claimed under (beat@<host>:<pid>)")
        parser.add_argument("-l", "--loglevel", default="info", help="log level (default: info)")
        parser.add_argument(
            "--max-interval",
            type=float,
            help="seconds between database reads at most (default: TQ['BEAT_MAX_LOOP_INTERVAL'])",
        )
        add_liveness_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(options["loglevel"])
        scheduler = Scheduler(
            name=options["name"] or default_name(),
            max_interval=options["max_interval"],
            liveness_file=options["liveness_file"],
        )
        scheduler.install_signal_handlers()
        try:
            code = scheduler.run()
        except ImproperlyConfigured as exc:  # a bad TQ["BEAT_SCHEDULE"] or @periodic_task
            raise CommandError(str(exc)) from None
        sys.exit(code)
