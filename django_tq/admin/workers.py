"""The workers screen: every ``tqworker`` with its heartbeat, shown alive, lost or stopped."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

import django_tq.admin.display as display
import django_tq.admin.now as now_panel
import django_tq.admin.worker_control as worker_control
from django_tq import control
from django_tq.admin.display import ReadOnlyAdmin, badge
from django_tq.models import WorkerState
from django_tq.models.workers import LOST_AFTER

ALIVE = ("#def7ec", "#03543f")
LOST = ("#fde8e8", "#9b1c1c")
STOPPED = ("#e4e7eb", "#3e4c59")


class LivenessFilter(admin.SimpleListFilter):
    """Filter workers by liveness, with the same rule as :meth:`WorkerState.is_alive`."""

    title = _("liveness")
    parameter_name = "liveness"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("alive", _("alive")), ("lost", _("lost")), ("stopped", _("stopped"))]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[WorkerState]
    ) -> QuerySet[WorkerState]:
        recent = Q(last_heartbeat__gt=timezone.now() - LOST_AFTER)
        if self.value() == "alive":
            return queryset.filter(recent, stopped_at__isnull=True)
        if self.value() == "lost":
            return queryset.filter(~recent, stopped_at__isnull=True)
        if self.value() == "stopped":
            return queryset.filter(stopped_at__isnull=False)
        return queryset


@admin.register(WorkerState)
class WorkerStateAdmin(ReadOnlyAdmin):
    """Workers: alive (recent heartbeat), lost (no heartbeat for a minute) or stopped."""

    list_display = (
        "hostname",
        "liveness",
        "pool",
        "concurrency",
        "queue_names",
        "processed",
        "pid",
        "started",
        "heartbeat",
        "stopped",
    )
    list_filter = [LivenessFilter, "pool"]
    search_fields = ["hostname"]
    fields = (
        "hostname",
        "liveness",
        "pool",
        "concurrency",
        "queue_names",
        "processed",
        "pid",
        "started_at",
        "last_heartbeat",
        "stopped_at",
        "active_tasks",
    )
    readonly_fields = fields
    actions = [
        "shutdown_workers",
        "pool_grow_workers",
        "pool_shrink_workers",
        "add_consumer_workers",
        "cancel_consumer_workers",
    ]

    # -- live actions: each needs django_tq.control_workerstate --------------------------------
    def has_control_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_tq.control_workerstate")

    @admin.action(description=_("Shut down selected workers (warm)"), permissions=["control"])
    def shutdown_workers(
        self, request: HttpRequest, queryset: QuerySet[WorkerState]
    ) -> TemplateResponse | None:
        return worker_control.confirm_and_send(self, request, queryset, "shutdown")

    @admin.action(description=_("Grow the pools of selected workers"), permissions=["control"])
    def pool_grow_workers(
        self, request: HttpRequest, queryset: QuerySet[WorkerState]
    ) -> TemplateResponse | None:
        return worker_control.confirm_and_send(self, request, queryset, "pool_grow")

    @admin.action(description=_("Shrink the pools of selected workers"), permissions=["control"])
    def pool_shrink_workers(
        self, request: HttpRequest, queryset: QuerySet[WorkerState]
    ) -> TemplateResponse | None:
        return worker_control.confirm_and_send(self, request, queryset, "pool_shrink")

    @admin.action(description=_("Consume another queue"), permissions=["control"])
    def add_consumer_workers(
        self, request: HttpRequest, queryset: QuerySet[WorkerState]
    ) -> TemplateResponse | None:
        return worker_control.confirm_and_send(self, request, queryset, "add_consumer")

    @admin.action(description=_("Stop consuming a queue"), permissions=["control"])
    def cancel_consumer_workers(
        self, request: HttpRequest, queryset: QuerySet[WorkerState]
    ) -> TemplateResponse | None:
        return worker_control.confirm_and_send(self, request, queryset, "cancel_consumer")

    @admin.display(description=_("active tasks"))
    def active_tasks(self, obj: WorkerState) -> SafeString | str:
        """Ask a live worker which tasks it runs now (a second at most)."""
        if not obj.is_alive():
            return "-"
        replies = control.inspect([obj.hostname], timeout=now_panel.ACTIVE_TIMEOUT).active()
        tasks = replies.get(obj.hostname)
        if tasks is None:
            return str(_("no reply within a second"))
        if not tasks:
            return str(_("none"))
        return now_panel.active_table(now_panel.linked(tasks))

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, obj: WorkerState) -> SafeString | str:
        return display.when(obj.started_at)

    @admin.display(description=_("last heartbeat"), ordering="last_heartbeat")
    def heartbeat(self, obj: WorkerState) -> SafeString | str:
        return display.when(obj.last_heartbeat)

    @admin.display(description=_("stopped"), ordering="stopped_at")
    def stopped(self, obj: WorkerState) -> SafeString | str:
        return display.when(obj.stopped_at)

    @admin.display(description=_("liveness"))
    def liveness(self, obj: WorkerState) -> SafeString:
        if obj.stopped_at is not None:
            return badge(_("stopped"), STOPPED)
        if obj.is_alive():
            return badge(_("alive"), ALIVE)
        return badge(_("lost"), LOST)

    @admin.display(description=_("queues"))
    def queue_names(self, obj: WorkerState) -> str:
        return ", ".join(str(name) for name in obj.queues or [])
