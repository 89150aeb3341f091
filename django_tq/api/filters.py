"""The query string a list endpoint accepts: allowlisted filters, ordering and paging.

Each list declares a :class:`ListQuery` serializer. Its fields are the whole allowlist: an unknown
parameter, a bad value or an ``ordering`` outside the declared choices is a 400 with the reason
per parameter, before any SQL runs. A filter given several times (``?state=FAILURE&state=DEAD``)
matches any of the values.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

#: the longest list of values one filter takes (bounds the SQL ``IN``)
MAX_VALUES = 100


def orderings(*fields: str) -> list[str]:
    """Return the ``ordering`` choices for ``fields``: each ascending and descending (``-``)."""
    return [choice for field in fields for choice in (field, f"-{field}")]


def any_of(max_length: int) -> serializers.ListField:
    """Return a filter field matching any of its values, each at most ``max_length`` characters."""
    return serializers.ListField(
        child=serializers.CharField(max_length=max_length),
        required=False,
        min_length=1,
        max_length=MAX_VALUES,
    )


class ListQuery(serializers.Serializer):
    """Paging parameters every list takes; subclasses add their filters and ``ordering``."""

    #: parameters that shape the page rather than filter rows
    PAGING: ClassVar[frozenset[str]] = frozenset({"ordering", "cursor", "page_size"})
    #: the ordering used when the request names none
    default_ordering: ClassVar[str]

    cursor = serializers.CharField(
        required=False, max_length=2000, help_text=_("Opaque position from a next/previous link.")
    )
    page_size = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text=_("Rows per page (default 50; larger values are capped at 200)."),
    )

    def to_internal_value(self, data: Any) -> Any:
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: [_("Unknown query parameter.")] for name in unknown}, code="unknown"
            )
        return super().to_internal_value(data)

    @property
    def ordering(self) -> str:
        """Return the requested ordering (validated), or the default one."""
        return str(self.validated_data.get("ordering") or self.default_ordering)

    def lookups(self) -> dict[str, Any]:
        """Return the validated filters as ORM lookups (lists become ``__in``)."""
        return {
            f"{name}__in" if isinstance(value, list) else name: value
            for name, value in self.validated_data.items()
            if name not in self.PAGING
        }


class ResultQuery(ListQuery):
    """``GET results/``: filter task results; newest first unless ``ordering`` says otherwise."""

    default_ordering = "-date_created"

    task_id = any_of(255)
    state = any_of(50)
    task_name = any_of(255)
    queue = any_of(200)
    worker = any_of(255)
    group_id = serializers.CharField(required=False, max_length=255)
    root_id = serializers.CharField(required=False, max_length=255)
    date_created__gte = serializers.DateTimeField(required=False)
    date_created__lte = serializers.DateTimeField(required=False)
    ordering = serializers.ChoiceField(
        choices=orderings("date_created", "date_done", "task_name", "state"), required=False
    )


class DeadLetterQuery(ListQuery):
    """``GET dead-letters/``: filter dead letters; newest first unless ``ordering`` says otherwise."""

    default_ordering = "-created_at"

    task_id = any_of(255)
    task_name = any_of(255)
    queue = any_of(200)
    created_at__gte = serializers.DateTimeField(required=False)
    created_at__lte = serializers.DateTimeField(required=False)
    ordering = serializers.ChoiceField(choices=orderings("created_at"), required=False)
