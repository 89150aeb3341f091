"""The periodic tasks screens: tasks with their schedule in words, next runs and recent runs;
the interval, crontab, solar and clocked schedules; the run history.

Admin edits take effect at beat's next tick (``TQ["BEAT_MAX_LOOP_INTERVAL"]``), with no restart.
The forms these screens edit with are in :mod:`django_tq.admin.schedule_forms`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

import django_tq.admin.display as display
from django_tq import control
from django_tq.admin.display import ReadOnlyAdmin, badge
from django_tq.admin.schedule_forms import CrontabForm, PeriodicTaskForm, RecentRunsFormSet
from django_tq.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTaskRun,
    SolarSchedule,
    TaskResult,
)
from django_tq.models.schedules import ScheduleRow
from django_tq.schedules import local_format

ENABLED = ("#def7ec", "#03543f")
DISABLED = ("#e4e7eb", "#3e4c59")
CODE = ("#e1effe", "#1e429f")
#: how many upcoming run times the change pages preview
PREVIEW = 5
#: fields a code-declared task takes from the code (the admin may only pause it)
CODE_OWNED = (
    "name", "task", "interval", "crontab", "solar", "clocked", "args", "kwargs", "queue", "exchange",
    "routing_key", "priority", "headers", "start_time", "expires", "expire_seconds", "one_off",
    "misfire_policy", "description",
)  # fmt: skip


def _task_link(task_id: str) -> SafeString | str:
    return display.short_id(task_id, display.results_url(task_id=task_id))


class RecentRunsInline(admin.TabularInline):
    """The latest runs of a periodic task, with the state of the task each one sent."""

    model = PeriodicTaskRun
    formset = RecentRunsFormSet
    verbose_name_plural = _("recent runs")
    fields = ("scheduled", "task_link", "state", "claimed_by", "sent")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("scheduled for"))
    def scheduled(self, obj: PeriodicTaskRun) -> SafeString | str:
        return display.when(obj.scheduled_for)

    @admin.display(description=_("task id"))
    def task_link(self, obj: PeriodicTaskRun) -> SafeString | str:
        return _task_link(obj.task_id)

    @admin.display(description=_("state"))
    def state(self, obj: PeriodicTaskRun) -> SafeString | str:
        state = TaskResult.objects.filter(task_id=obj.task_id).values_list("state", flat=True)
        found = state.first()
        return display.state_badge(found) if found else "-"

    @admin.display(description=_("sent at"))
    def sent(self, obj: PeriodicTaskRun) -> SafeString | str:
        if obj.sent_at is None:
            return badge(_("claimed, not sent yet"), ("#fdf6b2", "#8e4b10"))
        return display.when(obj.sent_at, same_day_as=obj.scheduled_for)


def _preview(row: PeriodicTask | ScheduleRow, runs: list[Any]) -> SafeString | str:
    """Return upcoming run times as a list, in the crontab's zone (else the current one)."""
    if not runs:
        return str(_("No upcoming run."))
    zone = row.timezone if isinstance(row, CrontabSchedule) else None
    if isinstance(row, PeriodicTask) and row.crontab is not None:
        zone = row.crontab.timezone
    zone = zone or timezone.get_current_timezone_name()
    return format_html(
        '<ol style="margin:0;padding-left:1.5em">{}</ol>',
        format_html_join("", "<li>{}</li>", ((local_format(run, zone),) for run in runs)),
    )


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(admin.ModelAdmin):
    """Periodic tasks: create, edit, pause, run now; code-declared ones may only be paused."""

    form = PeriodicTaskForm
    list_display = [
        "name",
        "enabled_badge",
        "task",
        "schedule_text",
        "next_run",
        "last_run",
        "total_run_count",
        "source",
    ]
    list_filter = ["enabled", "code_managed", "misfire_policy", "one_off", "task"]
    list_select_related = list(PeriodicTask.SCHEDULE_FIELDS)
    search_fields = ["name", "task", "description"]
    actions = ["enable", "disable", "run_now"]
    inlines = [RecentRunsInline]
    fieldsets = [
        (None, {"fields": ["name", "task", "enabled", "description", "source"]}),
        (
            _("Schedule"),
            {
                "fields": [
                    ("interval", "crontab", "solar", "clocked"),
                    "schedule_text",
                    "next_runs",
                    "start_time",
                    "expires",
                    "expire_seconds",
                    "one_off",
                    "misfire_policy",
                ],
                "description": _(
                    "Choose exactly one schedule. Changes apply at beat's next check, without "
                    "a restart, and start the schedule afresh (no catch-up of earlier runs)."
                ),
            },
        ),
        (_("Arguments"), {"fields": ["args", "kwargs"]}),
        (
            _("Delivery"),
            {
                "fields": ["queue", ("exchange", "routing_key"), "priority", "headers"],
                "classes": ["collapse"],
                "description": _(
                    "Sent as apply_async(queue=…, exchange=…, routing_key=…) would be: a queue "
                    "alone goes straight into it; an exchange or a routing key goes through the "
                    "exchange of TQ['QUEUES'], to the queues bound with a matching key."
                ),
            },
        ),
        (
            _("History"),
            {
                "fields": [
                    "last_run_at",
                    "total_run_count",
                    "runs_link",
                    "date_created",
                    "date_changed",
                ]
            },
        ),
    ]
    status_fields = ("schedule_text", "next_runs", "source", "runs_link")
    history_fields = ("last_run_at", "total_run_count", "date_created", "date_changed")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        readonly = [*self.status_fields, *self.history_fields]
        if obj is not None and obj.code_managed:
            readonly.extend(CODE_OWNED)
        return readonly

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Beat would declare a deleted code task again at its next start: remove it in the code.
        if obj is not None and obj.code_managed:
            return False
        return super().has_delete_permission(request, obj)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        obj = self.get_object(request, object_id)
        if obj is not None and obj.code_managed and request.method == "GET":
            messages.info(
                request,
                _(
                    "This task is declared in code (TQ['BEAT_SCHEDULE'] or @periodic_task): edit "
                    "it there. Here you can pause it; it stays paused across beat restarts."
                ),
            )
        return super().change_view(request, object_id, form_url, extra_context)

    # -- columns and read-only fields -----------------------------------------------------------
    @admin.display(description=_("enabled"), ordering="enabled")
    def enabled_badge(self, obj: PeriodicTask) -> SafeString:
        return badge(_("enabled"), ENABLED) if obj.enabled else badge(_("disabled"), DISABLED)

    @admin.display(description=_("schedule"))
    def schedule_text(self, obj: PeriodicTask) -> SafeString | str:
        row = obj.schedule_row()
        if row is None:
            return "-"
        title = row.as_schedule().expression if isinstance(row, CrontabSchedule) else ""
        return format_html('<span title="{}">{}</span>', title, row)

    @admin.display(description=_("next run"))
    def next_run(self, obj: PeriodicTask) -> SafeString | str:
        if not obj.enabled or obj.schedule_row() is None:
            return "-"
        upcoming = obj.upcoming(timezone.now(), 1)
        return display.when(upcoming[0]) if upcoming else "-"

    @admin.display(description=_("next runs"))
    def next_runs(self, obj: PeriodicTask) -> SafeString | str:
        if obj.pk is None or obj.schedule_row() is None:
            return str(_("Save to see the next run times."))
        return _preview(obj, obj.upcoming(timezone.now(), PREVIEW))

    @admin.display(description=_("last run"), ordering="last_run_at")
    def last_run(self, obj: PeriodicTask) -> SafeString | str:
        return display.when(obj.last_run_at)

    @admin.display(description=_("declared in"), ordering="code_managed")
    def source(self, obj: PeriodicTask) -> SafeString:
        return badge(_("code"), CODE) if obj.code_managed else badge(_("admin"), DISABLED)

    @admin.display(description=_("all runs"))
    def runs_link(self, obj: PeriodicTask) -> SafeString | str:
        if obj.pk is None:
            return "-"
        url = display.changelist_url("periodictaskrun", periodic_task__id__exact=str(obj.pk))
        return format_html('<a href="{}">{}</a>', url, _("Every run of this task"))

    # -- actions --------------------------------------------------------------------------------
    @admin.action(description=_("Enable the selected periodic tasks"), permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        # An enabled task starts afresh: no catch-up for what it missed while disabled.
        count = queryset.update(enabled=True, date_changed=timezone.now())
        self.message_user(request, ngettext("%d task enabled.", "%d tasks enabled.", count) % count)

    @admin.action(description=_("Disable the selected periodic tasks"), permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        count = queryset.update(enabled=False, date_changed=timezone.now())
        self.message_user(
            request, ngettext("%d task disabled.", "%d tasks disabled.", count) % count
        )

    @admin.action(description=_("Run the selected periodic tasks now"), permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        count = 0
        for periodic_task in queryset:
            control.run_periodic_task(periodic_task, by=f"admin: {request.user}")
            count += 1
        self.message_user(
            request,
            ngettext("%d task sent.", "%d tasks sent.", count) % count,
            messages.SUCCESS,
        )


@admin.register(PeriodicTaskRun)
class PeriodicTaskRunAdmin(ReadOnlyAdmin):
    """Every occurrence beat sent (or claimed), newest first."""

    allow_delete = False  # a run row is what stops another beat from sending it again
    list_display = ["scheduled", "periodic_task", "task_link", "claimed_by", "claimed", "sent"]
    list_filter = ["periodic_task", ("sent_at", admin.EmptyFieldListFilter)]
    list_select_related = ["periodic_task"]
    search_fields = ["=task_id", "periodic_task__name"]
    fields = ("periodic_task", "scheduled_for", "task_id", "claimed_by", "claimed_at", "sent_at")
    readonly_fields = fields

    @admin.display(description=_("scheduled for"), ordering="scheduled_for")
    def scheduled(self, obj: PeriodicTaskRun) -> SafeString | str:
        return display.when(obj.scheduled_for)

    @admin.display(description=_("task id"), ordering="task_id")
    def task_link(self, obj: PeriodicTaskRun) -> SafeString | str:
        return _task_link(obj.task_id)

    @admin.display(description=_("claimed at"), ordering="claimed_at")
    def claimed(self, obj: PeriodicTaskRun) -> SafeString | str:
        return display.when(obj.claimed_at, same_day_as=obj.scheduled_for)

    @admin.display(description=_("sent at"), ordering="sent_at")
    def sent(self, obj: PeriodicTaskRun) -> SafeString | str:
        return display.when(obj.sent_at, same_day_as=obj.scheduled_for)


class ScheduleAdmin(admin.ModelAdmin):
    """Shared by the schedule screens: the schedule in words and how many tasks use it."""

    readonly_fields = ["described", "next_runs"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).annotate(task_count=Count("periodic_tasks"))

    @admin.display(description=_("schedule"))
    def described(self, obj: ScheduleRow) -> str:
        return str(obj) if obj.pk else "-"

    @admin.display(description=_("periodic tasks"), ordering="task_count")
    def tasks(self, obj: Any) -> SafeString | str:
        url = display.changelist_url(
            "periodictask", **{f"{obj.periodic_task_field}__id__exact": str(obj.pk)}
        )
        return format_html('<a href="{}">{}</a>', url, obj.task_count)

    @admin.display(description=_("next runs"))
    def next_runs(self, obj: ScheduleRow) -> SafeString | str:
        if obj.pk is None:
            return str(_("Save to see the next run times."))
        now = timezone.now()
        schedule = obj.as_schedule()
        runs: list[Any] = []
        for moment in schedule.iter_after(now, since=schedule.since_for_new(now)):
            if len(runs) >= PREVIEW:
                break
            runs.append(moment)
        return _preview(obj, runs)


@admin.register(IntervalSchedule)
class IntervalScheduleAdmin(ScheduleAdmin):
    """Intervals: every N days, hours, minutes or seconds."""

    list_display = ["described", "every", "period", "tasks"]
    fields = ["every", "period", "described"]
    readonly_fields = ["described"]


@admin.register(CrontabSchedule)
class CrontabScheduleAdmin(ScheduleAdmin):
    """Crontabs in Celery's syntax, each in its own time zone."""

    form = CrontabForm
    list_display = ["described", "expression", "timezone", "tasks"]
    list_filter = ["timezone"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("minute", "hour", "day_of_month", "month_of_year", "day_of_week"),
                    "timezone",
                ],
                "description": _(
                    "Celery's syntax: 5, */15, 1-5, 0,30, mon-fri. Day of week 0 is Sunday. Day "
                    "of month and day of week must both match."
                ),
            },
        ),
        (_("Preview"), {"fields": ["described", "next_runs"]}),
    ]

    @admin.display(description=_("cron"))
    def expression(self, obj: CrontabSchedule) -> SafeString:
        return format_html("<code>{}</code>", obj.as_schedule().expression)


@admin.register(SolarSchedule)
class SolarScheduleAdmin(ScheduleAdmin):
    """Solar events: sunrise, sunset, solar noon or a twilight, at a latitude and longitude."""

    list_display = ["described", "event", "latitude", "longitude", "tasks"]
    list_filter = ["event"]
    fieldsets = [
        (
            None,
            {
                "fields": ["event", ("latitude", "longitude")],
                "description": _(
                    "Degrees, north and east positive (Paris: 48.8566, 2.3522). On days the "
                    "event does not happen (polar day or night) the task does not run."
                ),
            },
        ),
        (_("Preview"), {"fields": ["described", "next_runs"]}),
    ]


@admin.register(ClockedSchedule)
class ClockedScheduleAdmin(ScheduleAdmin):
    """Clocked times: run once, at that moment."""

    list_display = ["described", "clocked_time", "tasks"]
    fields = ["clocked_time", "described"]
    readonly_fields = ["described"]
