"""The group results screen (a group with its members), and the workflow graph of a task.

The graph is a page of its own, ``…/groupresult/graph/<task id>/``, linked from a task result's
page: the tree of tasks and groups of the workflow the task belongs to, as an escaped nested list.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

import django_tq.admin.display as display
from django_tq import states
from django_tq.admin.display import ReadOnlyAdmin
from django_tq.models import GroupResult, TaskResult
from django_tq.result import workflow_graph


def graph_url(task_id: str) -> str:
    """Return the admin URL of the workflow graph of ``task_id``."""
    return reverse("admin:django_tq_workflow_graph", args=[task_id])


def _node(node: dict[str, Any], current: str) -> SafeString:
    if node["type"] == "group":
        label = format_html(
            "<strong>{}</strong> {}",
            node["name"],
            display.short_id(
                node["id"], display.changelist_url("groupresult", group_id=node["id"])
            ),
        )
    else:
        url = display.results_url(task_id=node["id"])
        marker = format_html(" <em>{}</em>", _("(this task)")) if node["id"] == current else ""
        label = format_html("{} {}{}", display.short_id(node["id"], url), node["name"], marker)
    children = format_html_join("", "{}", ((_node(child, current),) for child in node["children"]))
    nested = format_html("<ul>{}</ul>", children) if node["children"] else ""
    return format_html("<li>{} {}{}</li>", display.state_badge(node["state"]), label, nested)


def render_graph(tree: dict[str, Any], current: str) -> SafeString:
    """Return the workflow tree as an escaped nested list, marking the ``current`` task."""
    return format_html('<ul class="tq-workflow">{}</ul>', _node(tree, current))


@admin.register(GroupResult)
class GroupResultAdmin(ReadOnlyAdmin):
    """Group results: each group (or chord header) with its members and their states."""

    list_display = ["group_id_short", "kind", "size", "created", "done", "owner"]
    list_display_links = ["group_id_short"]
    list_filter = ["is_chord", "date_created"]
    list_select_related = ["owner"]
    search_fields = ["=group_id", "=root_id"]
    search_help_text = _("Search by exact group id or root task id.")
    fields = (
        "group_id",
        "kind",
        "owner",
        "parent_link",
        "root_link",
        "date_created",
        "date_done",
        "members",
    )
    readonly_fields = fields

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.graph_view)
        graph = path("graph/<tq_id:task_id>/", view, name="django_tq_workflow_graph")
        return [graph, *super().get_urls()]

    def graph_view(self, request: HttpRequest, task_id: str) -> HttpResponse:
        """Show the workflow graph of ``task_id``'s workflow (needs the view task result perm)."""
        if not request.user.has_perm("django_tq.view_taskresult"):
            raise PermissionDenied
        tree = workflow_graph(task_id)
        if tree is None:
            raise Http404(_("No task result with this id."))
        context = {
            **self.admin_site.each_context(request),
            "title": _("Workflow of task %(id)s") % {"id": task_id},
            "content": render_graph(tree, task_id),
        }
        return TemplateResponse(request, "admin/base_site.html", context)

    @admin.display(description=_("group id"), ordering="group_id")
    def group_id_short(self, obj: GroupResult) -> SafeString | str:
        return display.short_id(obj.group_id)

    @admin.display(description=_("kind"), ordering="is_chord")
    def kind(self, obj: GroupResult) -> str:
        return str(_("chord header") if obj.is_chord else _("group"))

    @admin.display(description=_("members"))
    def size(self, obj: GroupResult) -> int:
        return len(obj.result_ids)

    @admin.display(description=_("created"), ordering="date_created")
    def created(self, obj: GroupResult) -> SafeString | str:
        return display.when(obj.date_created)

    @admin.display(description=_("done"), ordering="date_done")
    def done(self, obj: GroupResult) -> SafeString | str:
        return display.when(obj.date_done, same_day_as=obj.date_created)

    @admin.display(description=_("parent task"))
    def parent_link(self, obj: GroupResult) -> SafeString | str:
        return display.short_id(obj.parent_id, display.results_url(task_id=obj.parent_id or ""))

    @admin.display(description=_("workflow"))
    def root_link(self, obj: GroupResult) -> SafeString | str:
        if not obj.root_id:
            return "-"
        return format_html('<a href="{}">{}</a>', graph_url(obj.root_id), _("Show the graph"))

    @admin.display(description=_("members"))
    def members(self, obj: GroupResult) -> SafeString | str:
        if not obj.result_ids:
            return "-"
        found = dict(
            TaskResult.objects.filter(task_id__in=obj.result_ids).values_list("task_id", "state")
        )
        rows = (
            (
                display.short_id(task_id, display.results_url(task_id=task_id)),
                display.state_badge(found.get(task_id, states.PENDING)),
            )
            for task_id in obj.result_ids
        )
        return format_html("<ol>{}</ol>", format_html_join("", "<li>{} {}</li>", rows))
