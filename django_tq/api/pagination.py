"""Keyset (cursor) pagination: pages stay fast and stable however many rows the table holds.

A page is the rows after (or before) a position ``(value of the ordering field, primary key)``.
Unlike offset paging, a page costs the same at row 100,000 as at row 0, and rows inserted
meanwhile never shift a page. The cursor is an opaque, URL-safe token; a tampered cursor is a 400.
``NULL`` values of a nullable ordering field (``date_done``) come last in either direction.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F, Model, OrderBy, Q, QuerySet
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


@dataclass(frozen=True, kw_only=True)
class Ordering:
    """One field to order by (then the primary key, as a tie-breaker), and its direction."""

    field: str
    descending: bool
    nullable: bool

    @classmethod
    def parse(cls, model: type[Model], ordering: str) -> Ordering:
        """Read ``"-field"``/``"field"`` (already validated against an allowlist) for ``model``."""
        name = ordering.removeprefix("-")
        return cls(
            field=name,
            descending=ordering.startswith("-"),
            nullable=model._meta.get_field(name).null,
        )

    def order_by(self, *, backwards: bool) -> list[OrderBy]:
        """Return the ORM ordering, reversed when paging ``backwards``."""
        descending = self.descending != backwards
        nulls = {"nulls_first": True} if backwards else {"nulls_last": True}
        expressions = [F(self.field), F("pk")]
        if descending:
            return [expression.desc(**nulls) for expression in expressions]
        return [expression.asc(**nulls) for expression in expressions]

    def beyond(self, value: Any, pk: Any, *, backwards: bool) -> Q:
        """Return the rows strictly after position ``(value, pk)`` (before it when ``backwards``)."""
        later = "lt" if self.descending != backwards else "gt"
        past_pk = Q(**{f"pk__{later}": pk})
        if value is None:  # NULLs sort last: going on from a NULL stays among the NULLs
            is_null = Q(**{f"{self.field}__isnull": True})
            return is_null & past_pk if not backwards else ~is_null | (is_null & past_pk)
        rows = Q(**{f"{self.field}__{later}": value}) | (Q(**{self.field: value}) & past_pk)
        if self.nullable and not backwards:
            rows |= Q(**{f"{self.field}__isnull": True})
        return rows


@dataclass(frozen=True, kw_only=True)
class Cursor:
    """A position in an ordering, and which way the page it opens goes."""

    ordering: str
    value: Any
    pk: Any
    backwards: bool = False

    def encode(self) -> str:
        """Return the cursor as an opaque URL-safe token."""
        value = self.value.isoformat() if hasattr(self.value, "isoformat") else self.value
        raw = json.dumps([self.ordering, value, self.pk, self.backwards], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, model: type[Model], ordering: Ordering) -> Cursor:
        """Read a token made by :meth:`encode` for ``ordering``; raise a 400 when it is not one."""
        invalid = serializers.ValidationError({"cursor": [_("Invalid cursor.")]}, code="invalid")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            name, value, pk, backwards = json.loads(raw)
        except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
            raise invalid from None
        expected = f"-{ordering.field}" if ordering.descending else ordering.field
        if name != expected or not isinstance(backwards, bool):
            raise invalid
        try:
            pk = model._meta.pk.to_python(pk)
            if value is not None:
                value = model._meta.get_field(ordering.field).to_python(value)  # type: ignore[union-attr]
        except (DjangoValidationError, TypeError, ValueError, OverflowError):
            raise invalid from None
        if pk is None or (value is None and not ordering.nullable):
            raise invalid
        return cls(ordering=name, value=value, pk=pk, backwards=backwards)


@dataclass(frozen=True, kw_only=True)
class Page:
    """The rows of one page and the cursors of its neighbours."""

    rows: list[Any]
    next: Cursor | None
    previous: Cursor | None


def page_size(requested: int | None) -> int:
    """Return the page size to use: the request's, capped at :data:`MAX_PAGE_SIZE`."""
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def paginate(
    queryset: QuerySet[Any], *, ordering: str, cursor: str | None, size: int | None
) -> Page:
    """Return the page of ``queryset`` (ordered by ``ordering``) that ``cursor`` points at."""
    model = queryset.model
    order = Ordering.parse(model, ordering)
    start = Cursor.decode(cursor, model, order) if cursor else None
    backwards = bool(start and start.backwards)
    if start is not None:
        queryset = queryset.filter(order.beyond(start.value, start.pk, backwards=backwards))
    limit = page_size(size)
    rows = list(queryset.order_by(*order.order_by(backwards=backwards))[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()

    def at(row: Any, *, backwards: bool) -> Cursor:
        return Cursor(
            ordering=ordering, value=getattr(row, order.field), pk=row.pk, backwards=backwards
        )

    if not rows:  # past either end: offer the way back only
        back = replace(start, backwards=not start.backwards) if start else None
        return Page(
            rows=[],
            next=back if back and not back.backwards else None,
            previous=back if back and back.backwards else None,
        )
    has_next = more if not backwards else True
    has_previous = more if backwards else start is not None
    return Page(
        rows=rows,
        next=at(rows[-1], backwards=False) if has_next else None,
        previous=at(rows[0], backwards=True) if has_previous else None,
    )


class KeysetPagination(BasePagination):
    """Render a :class:`Page` as ``{"next": url, "previous": url, "results": [...]}``."""

    def link(self, request: Request, cursor: Cursor | None) -> str | None:
        """Return the URL of the page ``cursor`` opens (same filters and ordering), or ``None``."""
        if cursor is None:
            return None
        return str(replace_query_param(request.build_absolute_uri(), "cursor", cursor.encode()))

    def response(self, request: Request, page: Page, results: Any) -> Response:
        """Return the paginated response for ``page`` with its rows rendered as ``results``."""
        return Response(
            {
                "next": self.link(request, page.next),
                "previous": self.link(request, page.previous),
                "results": results,
            }
        )

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return []  # ``cursor`` and ``page_size`` are documented by the view's query serializer

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": {"type": "string", "format": "uri", "nullable": True},
                "previous": {"type": "string", "format": "uri", "nullable": True},
                "results": schema,
            },
        }
