"""``python manage.py tqstatus [--json] [--all]``: one line per worker, from the heartbeat rows
(read, print; exit 1 when no worker is alive, as ``celery status`` does)."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from django_tq.models import WorkerState


class Command(BaseCommand):
    help = (
        "List the workers: alive or lost (no heartbeat for a minute), queues, pool, "
        "concurrency, tasks processed, last heartbeat. Exit status 1 when none is alive."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")
        parser.add_argument("--all", action="store_true", help="also workers that stopped")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        rows = WorkerState.objects.order_by("hostname")
        if not options["all"]:
            rows = rows.filter(stopped_at__isnull=True)
        workers = [_describe(row, now) for row in rows]
        alive = sum(1 for worker in workers if worker["status"] == "alive")
        if options["json"]:
            self.stdout.write(json.dumps({"alive": alive, "workers": workers}, indent=2))
        else:
            for worker in workers:
                self.stdout.write(_line(worker))
            self.stdout.write(f"{alive} worker(s) alive, {len(workers) - alive} not.")
        if not alive:
            sys.exit(1)


def _describe(row: WorkerState, now: Any) -> dict[str, Any]:
    status = "stopped" if row.stopped_at else ("alive" if row.is_alive(now) else "lost")
    return {
        "hostname": row.hostname,
        "status": status,
        "pid": row.pid,
        "pool": row.pool,
        "concurrency": row.concurrency,
        "queues": list(row.queues) if isinstance(row.queues, list) else [],
        "processed": row.processed,
        "started_at": row.started_at.isoformat(),
        "last_heartbeat": row.last_heartbeat.isoformat(),
        "seconds_since_heartbeat": round((now - row.last_heartbeat).total_seconds(), 1),
    }


def _line(worker: dict[str, Any]) -> str:
    return (
        f"{worker['hostname']}: {worker['status'].upper()}  pid {worker['pid']}  "
        f"{worker['pool']} x{worker['concurrency']}  queues {','.join(worker['queues']) or '-'}  "
        f"{worker['processed']:,} processed  "
        f"heartbeat {worker['seconds_since_heartbeat']:g}s ago"
    )
