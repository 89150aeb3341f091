"""``python manage.py tqimport celery-beat|celery-results``: copy Celery's schedules or results.

Parses options, runs the importer (:mod:`django_tq.importers`), prints its report.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from django_tq.importers import celery_beat, celery_results
from django_tq.importers.progress import ProgressBar
from django_tq.importers.report import Action, Report
from django_tq.importers.tables import SourceMissing

SOURCES = ("celery-beat", "celery-results")
#: rows with a reason or remark listed at verbosity 1 (all kept ones at verbosity 2)
LISTED = 50


class Command(BaseCommand):
    help = (
        "Copy django-celery-beat's periodic tasks (celery-beat) or django-celery-results' task "
        "and group results (celery-results) into django_tq. Safe to run again: a second run "
        "changes nothing and says so."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", choices=SOURCES, help="what to import")
        parser.add_argument(
            "--database",
            default="default",
            help="the database alias holding the Celery tables (default: 'default')",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would be imported; write nothing"
        )
        parser.add_argument(
            "--celery-broker",
            choices=celery_beat.PRIORITY_ORDERS,
            default=celery_beat.AMQP,
            help=(
                "celery-beat: the broker Celery used, which says what a priority means: amqp "
                "(higher first, as here) or redis (0 first: stored as 9 - priority)"
            ),
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=celery_results.BATCH_SIZE,
            help=f"celery-results: rows per transaction (default: {celery_results.BATCH_SIZE})",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="celery-results: no progress bar"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["database"] not in connections:
            raise CommandError(f"Unknown database alias {options['database']!r}.")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        bar = None
        try:
            if options["source"] == "celery-beat":
                report = celery_beat.import_periodic_tasks(
                    database=options["database"],
                    dry_run=options["dry_run"],
                    priority_order=options["celery_broker"],
                )
            else:
                if not options["no_progress"] and options["verbosity"] and self.stderr.isatty():
                    bar = ProgressBar(lambda text: self.stderr.write(text, ending=""))
                report = celery_results.import_results(
                    database=options["database"],
                    dry_run=options["dry_run"],
                    batch_size=options["batch_size"],
                    progress=bar,
                )
        except SourceMissing as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            raise CommandError(
                "Interrupted. Every batch written is kept: run the same command again to go on "
                "where it stopped."
            ) from None
        finally:
            if bar is not None:
                bar.close()
        self.show(report, options["source"], options["verbosity"])

    def show(self, report: Report, source: str, verbosity: int) -> None:
        """Print the report: the rows worth reading, warnings, then one summary line a kind."""
        every_row = report.keep_every_row or verbosity >= 2
        if verbosity >= 1:
            self.stdout.write(f"Reading {report.source} through {report.via}.")
            listed = [
                row
                for row in report.rows
                if every_row or row.action in (Action.SKIPPED, Action.FAILED)
            ]
            for row in listed[: None if every_row else LISTED]:
                style = self.style.ERROR if row.action == Action.FAILED else None
                self.stdout.write("  " + row.describe(), style_func=style)
            hidden = len(listed) - LISTED
            if not every_row and hidden > 0:
                self.stdout.write(f"  … and {hidden:,} more (-v 2 lists them)")
            for theme, count in report.remarks.most_common():
                self.stdout.write(f"  {theme}: {count:,}")
        for warning in report.warnings:
            self.stderr.write(warning, style_func=self.style.WARNING)
        prefix = "Dry run, nothing written: " if report.dry_run else ""
        for line in report.summary():
            self.stdout.write(f"{prefix}{source}: {line}.")
        failed = report.count(Action.FAILED)
        if report.total and not report.changed_anything and not failed:
            self.stdout.write(
                f"{source}: nothing to do: every row was imported before or is skipped."
            )
        if failed:
            raise CommandError(f"{failed:,} row(s) could not be imported: see the reasons above.")
