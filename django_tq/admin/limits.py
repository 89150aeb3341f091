"""The unique locks and rate-limit buckets screens: which keys are taken, and each bucket's tokens."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

import django_tq.admin.display as display
from django_tq.admin.display import ReadOnlyAdmin, badge
from django_tq.models import RateLimitBucket, UniqueLock

HELD = ("#e1effe", "#1e429f")
STALE = ("#e4e7eb", "#3e4c59")


@admin.register(UniqueLock)
class UniqueLockAdmin(ReadOnlyAdmin):
    """Unique keys held by queued or running tasks; deleting one frees its key at once."""

    list_display = ("key", "task_link", "status", "expires", "created")
    search_fields = ["key", "=task_id"]
    search_help_text = _("Search by key or exact task id.")
    fields = ("key", "task_link", "status", "expires_at", "created_at")
    readonly_fields = fields

    @admin.display(description=_("task id"), ordering="task_id")
    def task_link(self, obj: UniqueLock) -> SafeString | str:
        return display.short_id(obj.task_id, display.results_url(task_id=obj.task_id))

    @admin.display(description=_("status"))
    def status(self, obj: UniqueLock) -> SafeString:
        if obj.expires_at <= timezone.now():
            return badge(_("stale"), STALE)
        return badge(_("held"), HELD)

    @admin.display(description=_("expires"), ordering="expires_at")
    def expires(self, obj: UniqueLock) -> SafeString | str:
        return display.when(obj.expires_at)

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, obj: UniqueLock) -> SafeString | str:
        return display.when(obj.created_at)


@admin.register(RateLimitBucket)
class RateLimitBucketAdmin(ReadOnlyAdmin):
    """Global rate-limit buckets; a negative count is starts promised to held messages."""

    list_display = ("name", "tokens_rounded", "updated")
    search_fields = ["name"]
    fields = ("name", "tokens_rounded", "updated_at")
    readonly_fields = fields

    @admin.display(description=_("tokens"), ordering="tokens")
    def tokens_rounded(self, obj: RateLimitBucket) -> str:
        return f"{obj.tokens:.2f}"

    @admin.display(description=_("updated"), ordering="updated_at")
    def updated(self, obj: RateLimitBucket) -> SafeString | str:
        return display.when(obj.updated_at)
