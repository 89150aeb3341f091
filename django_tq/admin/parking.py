"""The parked messages screen: far-ETA messages waiting in the database until they are due."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

import django_tq.admin.display as display
from django_tq import control, parking
from django_tq.admin.display import ReadOnlyAdmin
from django_tq.models import ParkedMessage


@admin.register(ParkedMessage)
class ParkedMessageAdmin(ReadOnlyAdmin):
    """Parked messages, soonest first: release one now, or revoke its task.

    Not deletable as such: a deleted message would leave its task QUEUED for ever. Revoking
    marks the task REVOKED and removes the message.
    """

    allow_delete = False
    list_display = ["due", "task_name", "task_link", "queue", "priority", "parked"]
    list_display_links = ["due"]
    list_filter = ["queue", "task_name", "due_at"]
    search_fields = ["=task_id", "task_name"]
    search_help_text = _("Search by exact task id, or by task name.")
    fields = (
        "task_link",
        "task_name",
        "queue",
        "priority",
        "due_at",
        "created_at",
        "content_type",
        "headers_pretty",
        "body_pretty",
    )
    readonly_fields = fields
    actions = ["release_now", "revoke_tasks"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ParkedMessage]:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and (match.url_name or "").endswith("changelist"):
            return queryset.defer("headers", "body")  # the list never shows them
        return queryset

    # -- actions: each needs staff status and the change permission on task results -----------
    def has_release_permission(self, request: HttpRequest) -> bool:
        """Releasing and revoking act on tasks: they need ``django_tq.change_taskresult``."""
        return request.user.has_perm("django_tq.change_taskresult")

    @admin.action(
        description=_("Release the selected messages now (run their tasks now)"),
        permissions=["release"],
    )
    def release_now(self, request: HttpRequest, queryset: QuerySet[ParkedMessage]) -> None:
        """Make them due now: a running worker publishes them within a second."""
        count = parking.release_now(list(queryset.values_list("task_id", flat=True)))
        self.message_user(
            request,
            ngettext(
                "%d message released: a running worker sends it within a second.",
                "%d messages released: a running worker sends them within a second.",
                count,
            )
            % count,
        )

    @admin.action(
        description=_("Revoke the selected tasks and remove their messages"),
        permissions=["release"],
    )
    def revoke_tasks(self, request: HttpRequest, queryset: QuerySet[ParkedMessage]) -> None:
        """Revoke each task (it is marked REVOKED), then remove its parked message."""
        task_ids = list(queryset.values_list("task_id", flat=True))
        for task_id in task_ids:
            control.revoke(task_id)
        ParkedMessage.objects.filter(task_id__in=task_ids).delete()
        self.message_user(request, _("Revoked %(count)d task(s).") % {"count": len(task_ids)})

    # -- columns and fields ---------------------------------------------------------------------
    @admin.display(description=_("due at"), ordering="due_at")
    def due(self, obj: ParkedMessage) -> SafeString | str:
        return display.when(obj.due_at)

    @admin.display(description=_("parked at"), ordering="created_at")
    def parked(self, obj: ParkedMessage) -> SafeString | str:
        return display.when(obj.created_at)

    @admin.display(description=_("task id"), ordering="task_id")
    def task_link(self, obj: ParkedMessage) -> SafeString | str:
        return display.short_id(obj.task_id, display.results_url(task_id=obj.task_id))

    @admin.display(description=_("headers"))
    def headers_pretty(self, obj: ParkedMessage) -> SafeString | str:
        return display.pretty_json(obj.headers)

    @admin.display(description=_("body"))
    def body_pretty(self, obj: ParkedMessage) -> SafeString | str:
        return display.pretty_json_text(obj.body)
