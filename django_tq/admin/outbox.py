"""The outbox screen: messages written in a transaction and not handed to the broker yet."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

import django_tq.admin.display as display
from django_tq.admin.display import ReadOnlyAdmin
from django_tq.models import OutboxMessage


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    """Outbox rows (``TQ["OUTBOX"]``): normally gone within seconds of their commit.

    Rows that stay mean the broker is refusing them or no worker is running the relay.
    Read-only, and not deletable here: deleting a row loses its task.
    """

    allow_delete = False
    actions = None  # nothing to delete in bulk here
    list_display = ("created", "task_name", "task_link", "queue", "priority", "not_before_short")
    list_display_links = ("created",)
    list_filter = ["queue", "task_name"]
    search_fields = ["=task_id", "task_name"]
    search_help_text = _("Search by exact task id or task name.")
    ordering = ["id"]
    fields = (
        "created_at",
        "task_link",
        "task_name",
        "queue",
        "priority",
        "not_before",
        "content_type",
        "headers_pretty",
        "body_pre",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[OutboxMessage]:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and (match.url_name or "").endswith("changelist"):
            return queryset.defer("headers", "body")  # the list never shows them
        return queryset

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, obj: OutboxMessage) -> SafeString | str:
        return display.when(obj.created_at)

    @admin.display(description=_("task id"), ordering="task_id")
    def task_link(self, obj: OutboxMessage) -> SafeString | str:
        return display.short_id(obj.task_id, display.results_url(task_id=obj.task_id))

    @admin.display(description=_("not before"), ordering="not_before")
    def not_before_short(self, obj: OutboxMessage) -> SafeString | str:
        return display.when(obj.not_before)

    @admin.display(description=_("headers"))
    def headers_pretty(self, obj: OutboxMessage) -> SafeString | str:
        return display.pretty_json(obj.headers)

    @admin.display(description=_("body"))
    def body_pre(self, obj: OutboxMessage) -> SafeString | str:
        return display.pretty_json_text(obj.body)
