"""The dashboard's "now" panel: the tasks each live worker runs, and the latest failures.

The dashboard renders it, and so does its own URL (``dashboard/now/``), which a small inline
script on the dashboard fetches every :data:`REFRESH_SECONDS` to replace the panel in place
(without JavaScript, the whole page refreshes as often). Running tasks come from the workers
themselves: one ``active`` command to the live workers (``WorkerState``), answered within a
second or marked as not answering; the failures are one query on the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.template.loader import render_to_string
from django.utils.safestring import SafeString

import django_tq.admin.display as display
from django_tq import control, serialization, states
from django_tq.models import TaskResult, WorkerState
from django_tq.models.workers import LOST_AFTER

#: states counted as failures: the task raised (and will not retry) or was dead-lettered
FAILED_STATES = (states.FAILURE, states.DEAD)
#: how many of the latest failures are listed
RECENT_FAILURES = 10
#: seconds between two refreshes of the panel
REFRESH_SECONDS = 10
#: seconds the panel waits for the workers to say what they run
ACTIVE_TIMEOUT = 1.0
#: response header of the panel's own URL (the script refreshes only from such a response)
PANEL_HEADER = "X-TQ-Panel"


@dataclass(frozen=True, kw_only=True)
class WorkerNow:
    """A live worker and what it runs now (``tasks`` None: it did not answer in time)."""

    hostname: str
    pool: str
    concurrency: int
    tasks: list[dict[str, Any]] | None

    @property
    def busy(self) -> int:
        """Return how many tasks it runs."""
        return len(self.tasks or [])


def running(now: datetime) -> list[WorkerNow]:
    """Ask every live worker which tasks it runs (one command, a second at most)."""
    workers = list(
        WorkerState.objects.filter(stopped_at__isnull=True, last_heartbeat__gt=now - LOST_AFTER)
        .order_by("hostname")
        .values_list("hostname", "pool", "concurrency")
    )
    if not workers:
        return []
    replies = control.inspect([name for name, _, _ in workers], timeout=ACTIVE_TIMEOUT).active()
    return [
        WorkerNow(
            hostname=hostname,
            pool=pool,
            concurrency=concurrency,
            tasks=linked(replies[hostname]) if hostname in replies else None,
        )
        for hostname, pool, concurrency in workers
    ]


def linked(reply: Any) -> list[dict[str, Any]]:
    """Return the tasks of an ``active`` reply, each with the ``url`` of its result."""
    tasks = [task for task in reply if isinstance(task, dict)] if isinstance(reply, list) else []
    return [{**task, "url": display.results_url(task_id=str(task.get("id")))} for task in tasks]


def recent_failures() -> list[TaskResult]:
    """Return the latest failed or dead results, without their arguments and traceback."""
    rows = TaskResult.objects.filter(state__in=FAILED_STATES).defer(
        "args", "kwargs", "traceback", "meta"
    )
    return list(rows.order_by("-date_created", "-id")[:RECENT_FAILURES])


def error_type(result: TaskResult) -> str:
    """Return the exception class name stored in a failed result (``""`` when there is none)."""
    data: Any = result.result
    if serialization.is_exception_data(data):
        return str(data["exc_type"]).rsplit(".", 1)[-1]
    return ""


def context(now: datetime) -> dict[str, Any]:
    """Return what the panel shows at ``now``."""
    workers = running(now)
    return {
        "now_workers": workers,
        "now_running": sum(worker.busy for worker in workers),
        "now_failures": [
            (row, error_type(row), display.state_badge(row.state), display.when(row.date_done, now))
            for row in recent_failures()
        ],
        "now_refresh": REFRESH_SECONDS,
        "now_updated": now,
    }


def active_table(tasks: list[dict[str, Any]]) -> SafeString:
    """Return the table of running tasks the panel and the workers screen show."""
    return SafeString(render_to_string("admin/django_tq/active_tasks.html", {"tasks": tasks}))
