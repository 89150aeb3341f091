"""``python manage.py tqpurge [-Q q1,q2] [--force] [--discard]``: empty queues (parse, confirm,
call :func:`django_tq.purge.purge`, print what was done)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tq import purge
from django_tq.broker import get_broker
from django_tq.conf import tq_settings


class Command(BaseCommand):
    help = (
        "Delete the waiting and parked messages of queues (a RabbitMQ quorum queue's "
        "<queue>.delivery-limit too), and mark the results that waited on them REVOKED. Asks "
        "first unless --force."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-Q",
            "--queues",
            help=f"comma-separated queues (default: TQ['DEFAULT_QUEUE'], {tq_settings.DEFAULT_QUEUE!r})",
        )
        parser.add_argument("-f", "--force", action="store_true", help="do not ask")
        parser.add_argument(
            "--discard",
            action="store_true",
            help=(
                "delete messages unread (fast); their chords, chains and errbacks are not told "
                "(the default reads each message and revokes it as a worker would)"
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queues = _queues(options["queues"])
        counts = purge.count(queues)
        broker = get_broker()
        for c in counts:
            waiting = "?" if c.waiting is None else f"{c.waiting:,}"
            limit_queue = broker.delivery_limit_queue(c.queue)
            at_limit = "?" if c.at_delivery_limit is None else f"{c.at_delivery_limit:,}"
            self.stdout.write(
                f"{c.queue}: {waiting} waiting, {c.parked:,} parked, "
                + ("" if limit_queue is None else f"{at_limit} in {limit_queue}, ")
                + f"{c.queued_results:,} QUEUED result(s)"
            )
        if not options["force"]:
            total = sum((c.waiting or 0) + c.parked + (c.at_delivery_limit or 0) for c in counts)
            if not _confirm(f"Purge about {total:,} message(s) from {', '.join(queues)}? [y/N] "):
                raise CommandError("Nothing purged (answer 'y' or pass --force).")
        done = purge.purge(queues, discard=options["discard"])
        self.stdout.write(
            self.style.SUCCESS(
                f"Purged {done.messages:,} message(s) from {', '.join(queues)} "
                f"({done.revoked:,} revoked, {done.deleted:,} deleted, "
                f"{done.discarded:,} discarded unread); {done.results:,} QUEUED result(s) "
                "marked REVOKED."
            )
        )


def _queues(value: str | None) -> list[str]:
    names = [name.strip() for name in (value or tq_settings.DEFAULT_QUEUE).split(",")]
    if not all(names):
        raise CommandError(f"Empty queue name in -Q {value!r}.")
    return names


def _confirm(prompt: str) -> bool:
    """Ask on the terminal (or read stdin); no input at all is a no."""
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
