"""The workflow endpoints: group results with their members, and the tree of a workflow.

Groups follow the results' rules (``IsStaffOrOwner`` by default): staff with the view permission
on group results see every group, a signed-in user the groups applied with ``owner=`` them. The
graph of a task is visible to whoever may see the task's result.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from django_tq import states
from django_tq.api.filters import ListQuery, any_of, orderings
from django_tq.api.pagination import KeysetPagination
from django_tq.api.permissions import ApiAccess
from django_tq.api.schema import document, document_field
from django_tq.api.serializers import URL_SCHEMA, absolute_url
from django_tq.api.views import LIST_ERRORS, ONE_ERRORS, ApiView, ResultView
from django_tq.models import GroupResult, TaskResult
from django_tq.result import workflow_graph


class GroupQuery(ListQuery):
    """``GET groups/``: filter group results; newest first unless ``ordering`` says otherwise."""

    default_ordering = "-date_created"

    group_id = any_of(255)
    root_id = serializers.CharField(required=False, max_length=255)
    date_created__gte = serializers.DateTimeField(required=False)
    date_created__lte = serializers.DateTimeField(required=False)
    ordering = serializers.ChoiceField(
        choices=orderings("date_created", "date_done"), required=False
    )


class GroupResultSerializer(serializers.ModelSerializer):
    """One group, as listed: its id, size and timing."""

    url = serializers.SerializerMethodField()
    size = serializers.SerializerMethodField()

    class Meta:
        model = GroupResult
        fields = [
            "group_id",
            "url",
            "is_chord",
            "size",
            "parent_id",
            "root_id",
            "date_created",
            "date_done",
        ]
        read_only_fields = fields

    @document_field(URL_SCHEMA)
    def get_url(self, obj: GroupResult) -> str:
        return absolute_url(self.context, "group-detail", obj.group_id)

    def get_size(self, obj: GroupResult) -> int:
        return len(obj.result_ids)


class GroupMemberSerializer(serializers.Serializer):
    """A member of a group: its id, name and state (``PENDING`` if not recorded yet)."""

    task_id = serializers.CharField()
    task_name = serializers.CharField(allow_blank=True)
    state = serializers.CharField()
    url = serializers.CharField(help_text=_("The member's result."))


class GroupResultDetailSerializer(GroupResultSerializer):
    """One group with its members in order, and how many are in each state."""

    members = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()
    completed_count = serializers.SerializerMethodField()
    ready = serializers.SerializerMethodField()

    class Meta(GroupResultSerializer.Meta):
        fields = [
            *GroupResultSerializer.Meta.fields,
            "completed_count",
            "ready",
            "counts",
            "members",
        ]
        read_only_fields = fields

    def _members(self, obj: GroupResult) -> list[dict[str, Any]]:
        """Return the members in order (read once per group for all the fields below)."""
        cache: dict[str, list[dict[str, Any]]] = self.context.setdefault("members", {})
        if obj.group_id not in cache:
            rows = TaskResult.objects.filter(task_id__in=obj.result_ids).values_list(
                "task_id", "task_name", "state"
            )
            found = {task_id: (name, state) for task_id, name, state in rows}
            cache[obj.group_id] = [
                {
                    "task_id": task_id,
                    "task_name": found.get(task_id, ("", ""))[0],
                    "state": found.get(task_id, ("", states.PENDING))[1],
                    "url": absolute_url(self.context, "result-detail", task_id),
                }
                for task_id in obj.result_ids
            ]
        return cache[obj.group_id]

    @document_field(GroupMemberSerializer(many=True))
    def get_members(self, obj: GroupResult) -> list[dict[str, Any]]:
        return self._members(obj)

    @document_field({"type": "object", "additionalProperties": {"type": "integer"}})
    def get_counts(self, obj: GroupResult) -> dict[str, int]:
        return dict(Counter(member["state"] for member in self._members(obj)))

    def get_completed_count(self, obj: GroupResult) -> int:
        return sum(1 for member in self._members(obj) if member["state"] == states.SUCCESS)

    def get_ready(self, obj: GroupResult) -> bool:
        return all(states.is_ready(member["state"]) for member in self._members(obj))


NODE_SCHEMA = {
    "type": "object",
    "required": ["id", "type", "name", "state", "children"],
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string", "enum": ["task", "group"]},
        "name": {"type": "string"},
        "state": {"type": "string"},
        "children": {"type": "array", "items": {"type": "object"}},
    },
}


class GroupView(ApiView):
    """Group results: staff with the view permission see all; other users the ones they own."""

    permission_classes = [ApiAccess]
    permission_model = GroupResult
    owner_field = "owner"
    lookup_field = "group_id"
    serializer_class = GroupResultDetailSerializer

    def get_queryset(self) -> QuerySet[GroupResult]:
        return self.visible(GroupResult.objects.all())


class GroupList(GroupView):
    """``GET groups/``: one page of group results."""

    pagination_class = KeysetPagination
    serializer_class = GroupResultSerializer

    @document(
        parameters=[GroupQuery], responses={200: GroupResultSerializer(many=True), **LIST_ERRORS}
    )
    def get(self, request: Request) -> Response:
        """List group results, newest first; filter, order and page with the query string."""
        return self.page(GroupQuery)


class GroupDetail(GroupView):
    """``GET groups/{group_id}/``: a group with its members' states and counts."""

    @document(responses={200: GroupResultDetailSerializer, **ONE_ERRORS})
    def get(self, request: Request, group_id: str) -> Response:
        """Return a group with its members in order and how many are in each state."""
        return Response(self.get_serializer(self.get_object()).data)


class ResultGraph(ResultView):
    """``GET results/{task_id}/graph/``: the workflow tree the task belongs to, from its root."""

    @document(responses={200: NODE_SCHEMA, **ONE_ERRORS})
    def get(self, request: Request, task_id: str) -> Response:
        """Return the tree of tasks and groups of the task's workflow (see docs/canvas.md)."""
        result = self.get_object()
        return Response(workflow_graph(result.task_id))
