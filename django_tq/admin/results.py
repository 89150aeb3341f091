"""The task results screen: every task call from QUEUED to its final state."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

import django_tq.admin.display as display
import django_tq.admin.requeue as requeue
from django_tq import control, states
from django_tq.admin.display import ReadOnlyAdmin
from django_tq.admin.groups import graph_url
from django_tq.models import TaskResult


def _changelist_link(model: str, text: str, **filters: str) -> SafeString:
    return format_html('<a href="{}">{}</a>', display.changelist_url(model, **filters), text)


@admin.register(TaskResult)
class TaskResultAdmin(ReadOnlyAdmin):
    """Task results: filter by state, task, queue, worker and date; search by id or name."""

    list_display = [
        "task_id_short",
        "task_name",
        "state_badge",
        "queue",
        "worker",
        "created",
        "done",
        "owner",
    ]
    list_display_links = ["task_id_short"]
    list_filter = [
        ("state", display.StateFilter),
        ("task_name", display.RecentValuesFilter),
        ("queue", display.RecentValuesFilter),
        ("worker", display.RecentValuesFilter),
        "date_created",
    ]
    list_select_related = ["owner"]
    search_fields = ["=task_id", "task_name"]
    search_help_text = _("Search by exact task id, or by task name.")
    fieldsets = [
        (None, {"fields": ["task_id", "task_name", "state_badge", "queue", "worker", "owner"]}),
        (_("Call"), {"fields": ["args_pretty", "kwargs_pretty"]}),
        (
            _("Outcome"),
            {"fields": ["result_pretty", "meta_pretty", "traceback_pre", "dead_letters"]},
        ),
        (
            _("Delivery"),
            {
                "fields": [
                    "retries",
                    "delivery_count",
                    "eta",
                    "expires",
                    "date_created",
                    "date_started",
                    "date_done",
                ]
            },
        ),
        (_("Workflow"), {"fields": ["root_link", "parent_link", "group_link"]}),
    ]
    readonly_fields = [
        "task_id",
        "task_name",
        "state_badge",
        "queue",
        "worker",
        "owner",
        "args_pretty",
        "kwargs_pretty",
        "result_pretty",
        "meta_pretty",
        "traceback_pre",
        "dead_letters",
        "retries",
        "delivery_count",
        "eta",
        "expires",
        "date_created",
        "date_started",
        "date_done",
        "root_link",
        "parent_link",
        "group_link",
    ]

    actions = ["revoke_tasks", "terminate_tasks", "requeue_tasks"]

    # -- actions: each needs staff status (the admin) and the change permission ---------------
    def has_revoke_permission(self, request: HttpRequest) -> bool:
        """Revoking, terminating and requeueing need ``django_tq.change_taskresult``."""
        return request.user.has_perm("django_tq.change_taskresult")

    @admin.action(
        description=_("Revoke selected tasks (they will not run)"), permissions=["revoke"]
    )
    def revoke_tasks(self, request: HttpRequest, queryset: QuerySet[TaskResult]) -> None:
        """Revoke: tasks that have not started never run; running ones finish."""
        for task_id in queryset.values_list("task_id", flat=True):
            control.revoke(task_id)
        self.message_user(request, _("Revoked %(count)d task(s).") % {"count": len(queryset)})

    @admin.action(
        description=_("Terminate selected tasks (revoke, and kill them if running)"),
        permissions=["revoke"],
    )
    def terminate_tasks(self, request: HttpRequest, queryset: QuerySet[TaskResult]) -> None:
        """Revoke with ``terminate=True`` (``SIGTERM``): a running task is stopped, on any pool."""
        for task_id in queryset.values_list("task_id", flat=True):
            control.revoke(task_id, terminate=True)
        self.message_user(request, _("Terminated %(count)d task(s).") % {"count": len(queryset)})

    @admin.action(
        description=_("Requeue selected failed, dead or revoked tasks"), permissions=["revoke"]
    )
    def requeue_tasks(
        self, request: HttpRequest, queryset: QuerySet[TaskResult]
    ) -> TemplateResponse | None:
        """Confirm, optionally with another queue or (one task) edited arguments, then requeue."""
        return requeue.requeue_selected(self, request, queryset)

    @admin.display(description=_("task id"), ordering="task_id")
    def task_id_short(self, obj: TaskResult) -> SafeString | str:
        return display.short_id(obj.task_id)

    @admin.display(description=_("created"), ordering="date_created")
    def created(self, obj: TaskResult) -> SafeString | str:
        return display.when(obj.date_created)

    @admin.display(description=_("done"), ordering="date_done")
    def done(self, obj: TaskResult) -> SafeString | str:
        return display.when(obj.date_done, same_day_as=obj.date_created)

    @admin.display(description=_("state"), ordering="state")
    def state_badge(self, obj: TaskResult) -> SafeString:
        return display.state_badge(obj.state)

    @admin.display(description=_("positional arguments"))
    def args_pretty(self, obj: TaskResult) -> SafeString | str:
        return display.pretty_json(obj.args)

    @admin.display(description=_("keyword arguments"))
    def kwargs_pretty(self, obj: TaskResult) -> SafeString | str:
        return display.pretty_json(obj.kwargs)

    @admin.display(description=_("result"))
    def result_pretty(self, obj: TaskResult) -> SafeString | str:
        return display.pretty_json(obj.result)

    @admin.display(description=_("meta"))
    def meta_pretty(self, obj: TaskResult) -> SafeString | str:
        return display.pretty_json(obj.meta)

    @admin.display(description=_("traceback"))
    def traceback_pre(self, obj: TaskResult) -> SafeString | str:
        return display.preformatted(obj.traceback)

    @admin.display(description=_("dead letters"))
    def dead_letters(self, obj: TaskResult) -> SafeString | str:
        if obj.state != states.DEAD:
            return "-"
        return _changelist_link(
            "deadletter", str(_("Show the dead-letter records")), task_id=obj.task_id
        )

    @admin.display(description=_("root task"))
    def root_link(self, obj: TaskResult) -> SafeString | str:
        if not obj.root_id:
            return "-"
        text = str(_("%(id)s (every task of this workflow)") % {"id": obj.root_id})
        graph = format_html('<a href="{}">{}</a>', graph_url(obj.task_id), _("show the graph"))
        return format_html(
            "{} · {}", _changelist_link("taskresult", text, root_id=obj.root_id), graph
        )

    @admin.display(description=_("parent task"))
    def parent_link(self, obj: TaskResult) -> SafeString | str:
        if not obj.parent_id:
            return "-"
        return _changelist_link("taskresult", obj.parent_id, task_id=obj.parent_id)

    @admin.display(description=_("group"))
    def group_link(self, obj: TaskResult) -> SafeString | str:
        if not obj.group_id:
            return "-"
        return _changelist_link("groupresult", obj.group_id, group_id=obj.group_id)
