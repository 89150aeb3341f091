"""The workers screen: every ``tqworker`` with its heartbeat, shown alive, lost or stopped."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

import django_tq.admin.display as display
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
    )
    readonly_fields = fields

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
