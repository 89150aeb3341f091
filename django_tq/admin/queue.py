"""The queued messages screen: what waits in (or is leased from) the ``django://`` queue table."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

import django_tq.admin.display as display
from django_tq.admin.display import ReadOnlyAdmin, badge, pretty_json_text
from django_tq.models import QueueMessage

WAITING = ("#e4e7eb", "#3e4c59")
DELAYED = ("#fdf6b2", "#8e4b10")
LEASED = ("#e1effe", "#1e429f")


@admin.register(QueueMessage)
class QueueMessageAdmin(ReadOnlyAdmin):
    """Messages of the ``django://`` transport: waiting, delayed (ETA) or leased to a consumer.

    Read-only, and not deletable here: acks and leases belong to the workers.
    """

    allow_delete = False
    actions = None  # nothing to delete in bulk here
    list_display = (
        "id",
        "queue",
        "priority",
        "status",
        "not_before_short",
        "lease_owner",
        "lease_expires",
        "delivery_count",
        "created",
    )
    list_filter = ["queue", "priority"]
    search_fields = ["=queue", "=lease_owner"]
    ordering = ["queue", "-priority", "id"]
    fields = (
        "id",
        "queue",
        "priority",
        "status",
        "not_before",
        "lease_owner",
        "lease_expires_at",
        "delivery_count",
        "created_at",
        "payload_pretty",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[QueueMessage]:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and (match.url_name or "").endswith("changelist"):
            return queryset.defer("payload")  # the list never shows it
        return queryset

    @admin.display(description=_("not before"), ordering="not_before")
    def not_before_short(self, obj: QueueMessage) -> SafeString | str:
        return display.when(obj.not_before)

    @admin.display(description=_("lease expires at"), ordering="lease_expires_at")
    def lease_expires(self, obj: QueueMessage) -> SafeString | str:
        return display.when(obj.lease_expires_at)

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, obj: QueueMessage) -> SafeString | str:
        return display.when(obj.created_at)

    @admin.display(description=_("status"))
    def status(self, obj: QueueMessage) -> SafeString:
        now = timezone.now()
        if obj.lease_expires_at is not None and obj.lease_expires_at > now:
            return badge(_("leased"), LEASED)
        if obj.not_before > now:
            return badge(_("delayed"), DELAYED)
        return badge(_("waiting"), WAITING)

    @admin.display(description=_("payload"))
    def payload_pretty(self, obj: QueueMessage) -> SafeString | str:
        return pretty_json_text(obj.payload)
