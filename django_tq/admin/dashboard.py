"""The dashboard: throughput, failures and queue depth over time, and the numbers of right now.

One screen at ``admin/django_tq/dashboard/``, listed in the admin index, for staff who may view
task results. Its queries are few and do not grow with the data: one aggregate over the results
of the window (``date_done`` index), one over the queue depth samples, one each for workers and
dead letters, the queue overview the REST API shows, and the "now" panel (``now.py``: the latest
failures, and one ``active`` command to the live workers; also rendered alone at
``dashboard/now/`` for the panel's refresh). Buckets are minutes or hours in UTC (the same on
every database, with or without time zone tables); labels are local.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Q
from django.db.models.functions import Trunc
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

import django_tq.admin.charts as charts
import django_tq.admin.display as display
import django_tq.admin.now as now_panel
from django_tq import queues, states
from django_tq.models import Dashboard, DeadLetter, QueueDepthSample, TaskResult, WorkerState
from django_tq.models.workers import LOST_AFTER

SUCCEEDED_COLOUR = "#31c48d"
FAILED_COLOUR = "#f05252"
OTHER_COLOUR = "#a4cafe"
#: one colour per queue line, in turn
QUEUE_COLOURS = ("#3f83f8", "#9061f9", "#ff8a4c", "#0694a2", "#e74694", "#8e4b10")


@dataclass(frozen=True, kw_only=True)
class Window:
    """A time span shown on the dashboard, cut into equal buckets."""

    key: str
    label: Any
    span: timedelta
    bucket: str  # "minute" or "hour", a kind of :class:`~django.db.models.functions.Trunc`
    label_format: str

    @property
    def step(self) -> timedelta:
        """Return the length of one bucket."""
        return timedelta(minutes=1) if self.bucket == "minute" else timedelta(hours=1)

    def starts(self, now: datetime) -> list[datetime]:
        """Return the UTC start of every bucket of the window ending at ``now``, oldest first."""
        last = now.astimezone(UTC).replace(second=0, microsecond=0)
        if self.bucket == "hour":
            last = last.replace(minute=0)
        size = int(self.span / self.step)
        return [last - self.step * (size - 1 - index) for index in range(size)]


WINDOWS = {
    window.key: window
    for window in (
        Window(
            key="1h", label=_("last hour"), span=timedelta(hours=1), bucket="minute",
            label_format="%H:%M",
        ),
        Window(
            key="24h", label=_("last 24 hours"), span=timedelta(hours=24), bucket="hour",
            label_format="%H:%M",
        ),
        Window(
            key="7d", label=_("last 7 days"), span=timedelta(days=7), bucket="hour",
            label_format="%m-%d %H:%M",
        ),
    )
}  # fmt: skip
DEFAULT_WINDOW = "24h"


def _bucket(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def throughput(window: Window, starts: list[datetime]) -> dict[str, tuple[int, ...]]:
    """Return finished tasks per bucket: ``succeeded``, ``failed`` and ``other`` (e.g. revoked)."""
    rows = (
        TaskResult.objects.filter(date_done__gte=starts[0], state__in=states.READY_STATES)
        .annotate(bucket=Trunc("date_done", window.bucket, tzinfo=UTC))
        .values("bucket")
        .annotate(
            finished=Count("pk"),
            succeeded=Count("pk", filter=Q(state=states.SUCCESS)),
            failed=Count("pk", filter=Q(state__in=now_panel.FAILED_STATES)),
        )
        .order_by("bucket")
    )
    by_bucket = {_bucket(row["bucket"]): row for row in rows}
    empty = {"finished": 0, "succeeded": 0, "failed": 0}
    picked = [by_bucket.get(start, empty) for start in starts]
    return {
        "succeeded": tuple(row["succeeded"] for row in picked),
        "failed": tuple(row["failed"] for row in picked),
        "other": tuple(row["finished"] - row["succeeded"] - row["failed"] for row in picked),
    }


def depth_history(window: Window, starts: list[datetime]) -> dict[str, tuple[int | None, ...]]:
    """Return each sampled queue's peak depth per bucket (``None``: no sample in that bucket)."""
    rows = (
        QueueDepthSample.objects.filter(sampled_at__gte=starts[0])
        .annotate(bucket=Trunc("sampled_at", window.bucket, tzinfo=UTC))
        .values("queue", "bucket")
        .annotate(depth=Max("depth"))
        .order_by("queue", "bucket")
    )
    peaks: dict[str, dict[datetime, int]] = defaultdict(dict)
    for row in rows:
        peaks[row["queue"]][_bucket(row["bucket"])] = row["depth"]
    return {
        queue: tuple(by_bucket.get(start) for start in starts)
        for queue, by_bucket in sorted(peaks.items())
    }


def worker_counts(now: datetime) -> dict[str, int]:
    """Return how many workers are ``alive`` and ``lost`` (stopped ones are not counted)."""
    recent = Q(last_heartbeat__gt=now - LOST_AFTER)
    return WorkerState.objects.filter(stopped_at__isnull=True).aggregate(
        alive=Count("pk", filter=recent), lost=Count("pk", filter=~recent)
    )


def _labels(window: Window, starts: list[datetime]) -> list[str]:
    return [timezone.localtime(start).strftime(window.label_format) for start in starts]


def _charts(
    window: Window, starts: list[datetime], done: dict[str, tuple[int, ...]]
) -> dict[str, Any]:
    labels = _labels(window, starts)
    finished = [
        charts.Series(name=_("succeeded"), values=done["succeeded"], colour=SUCCEEDED_COLOUR),
        charts.Series(name=_("failed"), values=done["failed"], colour=FAILED_COLOUR),
        charts.Series(name=_("other (revoked)"), values=done["other"], colour=OTHER_COLOUR),
    ]
    depths = [
        charts.Series(name=queue, values=values, colour=QUEUE_COLOURS[index % len(QUEUE_COLOURS)])
        for index, (queue, values) in enumerate(depth_history(window, starts).items())
    ]
    if window.bucket == "minute":
        per, described = _("tasks per minute"), _("Tasks finished per minute, %(window)s.")
    else:
        per, described = _("tasks per hour"), _("Tasks finished per hour, %(window)s.")
    when = {"window": window.label}
    return {
        "throughput_chart": charts.bar_chart(
            key="throughput",
            title=_("Throughput"),
            description=described % when,
            y_label=per,
            x_labels=labels,
            series=finished,
        ),
        "throughput_legend": charts.legend(finished),
        "failures_chart": charts.bar_chart(
            key="failures",
            title=_("Failures"),
            description=_("Tasks that failed or were dead-lettered, %(window)s.") % when,
            y_label=_("failures"),
            x_labels=labels,
            series=[finished[1]],
        ),
        "depth_chart": charts.line_chart(
            key="depth",
            title=_("Queue depth"),
            description=_("Peak number of waiting messages per queue, %(window)s.") % when,
            y_label=_("messages"),
            x_labels=labels,
            series=depths,
        )
        if depths
        else None,
        "depth_legend": charts.legend(depths),
    }


def context(window: Window, now: datetime) -> dict[str, Any]:
    """Return the dashboard's numbers and charts for ``window`` ending at ``now``."""
    starts = window.starts(now)
    done = throughput(window, starts)
    failed = sum(done["failed"])
    finished = sum(done["succeeded"]) + failed + sum(done["other"])
    queue_rows = queues.overview(now)
    return {
        "window": window,
        "windows": list(WINDOWS.values()),
        "finished": finished,
        "failed": failed,
        "failure_rate": f"{100 * failed / finished:.1f}%" if finished else "-",
        "workers": worker_counts(now),
        "waiting": sum(row.depth or 0 for row in queue_rows),
        "dead_letters": DeadLetter.objects.filter(created_at__gte=starts[0]).count(),
        "queues": [(row, display.results_url(queue__exact=row.name)) for row in queue_rows],
        **now_panel.context(now),
        **_charts(window, starts, done),
    }


@admin.register(Dashboard)
class DashboardAdmin(admin.ModelAdmin):
    """The dashboard as an admin screen, visible to staff who may view task results."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("django_tq.view_taskresult")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [
            path("", self.admin_site.admin_view(self.changelist_view), name=name),
            path(
                "now/",
                self.admin_site.admin_view(self.now_view),
                name=f"{self.opts.app_label}_{self.opts.model_name}_now",
            ),
        ]

    def now_view(self, request: HttpRequest) -> HttpResponse:
        """Render the "now" panel alone: what the dashboard's script swaps in every few seconds."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        page = {
            **now_panel.context(timezone.now()),
            "workers_url": reverse("admin:django_tq_workerstate_changelist"),
        }
        response = TemplateResponse(request, "admin/django_tq/dashboard_now.html", page)
        response[now_panel.PANEL_HEADER] = "now"  # not a login page the session expired into
        return response

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Render the dashboard for the window in ``?window=`` (default the last 24 hours)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        window = WINDOWS.get(request.GET.get("window", ""), WINDOWS[DEFAULT_WINDOW])
        now = timezone.now()
        page = {
            **self.admin_site.each_context(request),
            **context(window, now),
            "title": _("Task queue dashboard"),
            "subtitle": None,
            "opts": self.opts,
            "now": now,
            "results_url": reverse("admin:django_tq_taskresult_changelist"),
            "failed_url": display.results_url(state__exact=states.FAILURE),
            "workers_url": reverse("admin:django_tq_workerstate_changelist"),
            "dead_letters_url": reverse("admin:django_tq_deadletter_changelist"),
            "now_url": reverse("admin:django_tq_dashboard_now"),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/django_tq/dashboard.html", page)
