"""The revocations screen: which task ids workers skip (or kill), since when, and their state."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

import django_tq.admin.display as display
from django_tq.admin.display import ReadOnlyAdmin, badge
from django_tq.models import Revocation, TaskResult

TERMINATE = ("#fde8e8", "#9b1c1c")
SKIP = ("#edebfe", "#5521b5")


@admin.register(Revocation)
class RevocationAdmin(ReadOnlyAdmin):
    """Revoked task ids, newest first, with the state of each task.

    Read-only and not deletable: running workers keep a revocation they have read, while workers
    started later would not see a deleted one, so deleting cannot un-revoke a task. Workers delete
    revocations once results expire (``TQ["RESULT_EXPIRES"]``).
    """

    allow_delete = False
    actions = None  # nothing to do in bulk: see the class docstring
    list_display = ["revoked", "task_link", "task_name", "state", "mode", "signal"]
    list_display_links = ["revoked"]
    list_filter = ["terminate", "signal", "created_at"]
    search_fields = ["=task_id"]
    search_help_text = _("Search by exact task id.")
    fields = ("task_link", "task_name", "state", "mode", "signal", "created_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Revocation]:
        results = TaskResult.objects.filter(task_id=OuterRef("task_id"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                task_state=Subquery(results.values("state")[:1]),
                task_name=Subquery(results.values("task_name")[:1]),
            )
        )

    @admin.display(description=_("revoked at"), ordering="created_at")
    def revoked(self, obj: Revocation) -> SafeString | str:
        return display.when(obj.created_at)

    @admin.display(description=_("task id"), ordering="task_id")
    def task_link(self, obj: Revocation) -> SafeString | str:
        return display.short_id(obj.task_id, display.results_url(task_id=obj.task_id))

    @admin.display(description=_("task name"))
    def task_name(self, obj: Revocation) -> str:
        return getattr(obj, "task_name", None) or "-"

    @admin.display(description=_("state"))
    def state(self, obj: Revocation) -> SafeString | str:
        found = getattr(obj, "task_state", None)
        return display.state_badge(found) if found else "-"

    @admin.display(description=_("revocation"), ordering="terminate")
    def mode(self, obj: Revocation) -> SafeString:
        if obj.terminate:
            return badge(_("terminate if running"), TERMINATE)
        return badge(_("skip"), SKIP)
