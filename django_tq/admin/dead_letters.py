"""The dead letters screen: messages that could not run, with the reason and the raw payload."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

import django_tq.admin.display as display
from django_tq.admin.display import ReadOnlyAdmin
from django_tq.models import DeadLetter


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    """Dead letters: undecodable, unknown-task, poison or unsigned messages, kept for inspection."""

    list_display = ["created", "task_name", "task_link", "queue", "short_reason", "worker"]
    list_display_links = ["created"]
    list_filter = ["queue", "task_name", "created_at"]
    search_fields = ["=task_id", "task_name", "reason"]
    search_help_text = _("Search by exact task id, task name or reason.")
    fields = (
        "created_at",
        "task_id_link",
        "task_name",
        "queue",
        "worker",
        "reason_pre",
        "content_type",
        "headers_pretty",
        "payload_pre",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeadLetter]:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and (match.url_name or "").endswith("changelist"):
            return queryset.defer("payload", "headers")  # the list never shows them
        return queryset

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, obj: DeadLetter) -> SafeString | str:
        return display.when(obj.created_at)

    @admin.display(description=_("task id"), ordering="task_id")
    def task_link(self, obj: DeadLetter) -> SafeString | str:
        if not obj.task_id:
            return "-"
        return display.short_id(obj.task_id, display.results_url(task_id=obj.task_id))

    @admin.display(description=_("task id"))
    def task_id_link(self, obj: DeadLetter) -> SafeString | str:
        if not obj.task_id:
            return "-"
        return format_html(
            '<a href="{}">{}</a>', display.results_url(task_id=obj.task_id), obj.task_id
        )

    @admin.display(description=_("reason"))
    def short_reason(self, obj: DeadLetter) -> str:
        return Truncator(obj.reason).chars(90)

    @admin.display(description=_("reason"))
    def reason_pre(self, obj: DeadLetter) -> SafeString | str:
        return display.preformatted(obj.reason)

    @admin.display(description=_("headers"))
    def headers_pretty(self, obj: DeadLetter) -> SafeString | str:
        return display.pretty_json(obj.headers)

    @admin.display(description=_("raw payload"))
    def payload_pre(self, obj: DeadLetter) -> SafeString | str:
        return display.preformatted(obj.payload)
