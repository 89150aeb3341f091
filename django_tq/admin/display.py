"""Shared pieces of the admin screens: read-only base class, state badges, pretty JSON, JSON input."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from django_tq import serialization, states

#: badge colours (background, text) by task state; custom states (e.g. PROGRESS) get ``OTHER``
STATE_COLOURS: dict[str, tuple[str, str]] = {
    "PENDING": ("#e4e7eb", "#3e4c59"),
    "QUEUED": ("#e4e7eb", "#3e4c59"),
    "RECEIVED": ("#e1effe", "#1e429f"),
    "STARTED": ("#c3ddfd", "#1e429f"),
    "SUCCESS": ("#def7ec", "#03543f"),
    "FAILURE": ("#fde8e8", "#9b1c1c"),
    "RETRY": ("#fdf6b2", "#8e4b10"),
    "REVOKED": ("#edebfe", "#5521b5"),
    "DEAD": ("#771d1d", "#ffffff"),
}
OTHER = ("#d5f5f6", "#014451")

BADGE = (
    '<span style="display:inline-block;padding:1px 8px;border-radius:9px;font-size:11px;'
    'font-weight:600;letter-spacing:.02em;white-space:nowrap;background:{};color:{}">{}</span>'
)

PRE = (
    '<pre style="margin:0;padding:6px 8px;max-height:32em;overflow:auto;white-space:pre-wrap;'
    "word-break:break-word;font-size:12px;line-height:1.45;border-radius:4px;"
    'background:var(--darkened-bg, #f8f8f8)">{}</pre>'
)


def changelist_url(model: str, **filters: str) -> str:
    """Return the URL of django_tq's ``model`` changelist filtered by ``filters``."""
    return reverse(f"admin:django_tq_{model}_changelist") + "?" + urlencode(filters)


def results_url(**filters: str) -> str:
    """Return the URL of the task results list filtered by ``filters`` (e.g. ``task_id=``)."""
    return changelist_url("taskresult", **filters)


def short_id(task_id: str | None, url: str = "") -> SafeString | str:
    """Return the first 8 characters of an id, monospaced, with the full id as a tooltip."""
    if not task_id:
        return "-"
    text = task_id if len(task_id) <= 12 else f"{task_id[:8]}…"
    if url:
        return format_html(
            '<a href="{}" title="{}" style="font-family:monospace">{}</a>', url, task_id, text
        )
    return format_html('<span title="{}" style="font-family:monospace">{}</span>', task_id, text)


def when(moment: datetime | None, same_day_as: datetime | None = None) -> SafeString | str:
    """Return a compact local time (``2026-11-23 11:56:02``; only the time when on ``same_day_as``)."""
    if moment is None:
        return "-"
    local = timezone.localtime(moment)
    full = local.strftime("%Y-%m-%d %H:%M:%S")
    text = full
    if same_day_as is not None and timezone.localtime(same_day_as).date() == local.date():
        text = local.strftime("%H:%M:%S")
    return format_html('<span title="{}" style="white-space:nowrap">{}</span>', full, text)


def badge(text: Any, colours: tuple[str, str]) -> SafeString:
    """Return ``text`` (escaped) as a coloured badge."""
    background, colour = colours
    return format_html(BADGE, background, colour, text)


def state_badge(state: str) -> SafeString:
    """Return a task state as a coloured badge."""
    return badge(state, STATE_COLOURS.get(state, OTHER))


def pretty_json(value: Any) -> SafeString | str:
    """Return JSON data pretty-printed in an escaped ``<pre>`` (``-`` for nothing)."""
    if value is None or value == "":
        return "-"
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html(PRE, text)


def preformatted(text: str) -> SafeString | str:
    """Return text (a traceback, a raw payload) escaped in a ``<pre>`` (``-`` for nothing)."""
    if not text:
        return "-"
    return format_html(PRE, text)


def pretty_json_text(text: str) -> SafeString | str:
    """Return a JSON document stored as text pretty-printed (as is when it is not JSON)."""
    try:
        return pretty_json(json.loads(text))
    except (TypeError, ValueError):
        return preformatted(text)


class RecentValuesFilter(admin.AllValuesFieldListFilter):
    """A sidebar filter offering the values of the latest :attr:`window` rows (and the one chosen).

    Django's "all values" filter runs ``SELECT DISTINCT`` over the whole table on every page: a
    full scan that grows with the table (a quarter of a second per page for four filters at
    100,000 results on PostgreSQL). This one reads the column of the newest rows only, by primary
    key, so a page costs the same at any size. Older values can still be filtered by URL or search.
    """

    window = 10_000
    #: values always offered (e.g. every standard task state)
    always: frozenset[str] = frozenset()

    def __init__(
        self,
        field: Any,
        request: HttpRequest,
        params: Any,
        model: Any,
        model_admin: Any,
        field_path: str,
    ) -> None:
        super().__init__(field, request, params, model, model_admin, field_path)
        recent = model._default_manager.order_by("-pk").values_list(field.name, flat=True)
        values = {value for value in recent[: self.window] if value is not None}
        selected: Any = self.lookup_val or []
        chosen = {selected} if isinstance(selected, str) else set(selected)
        # a list where Django keeps a lazy queryset: choices() only iterates it
        self.lookup_choices = sorted(values | self.always | chosen)  # type: ignore[assignment]


class StateFilter(RecentValuesFilter):
    """The task state filter: every standard state, and custom ones of the latest results."""

    always = states.ALL_STATES - {states.PENDING}  # PENDING is never stored


class CappedPaginator(Paginator):
    """A paginator that counts at most :attr:`cap` rows (``LIMIT`` inside the ``COUNT``).

    Counting every matching row of a large table on every page costs more than the page itself;
    past the cap the list says "more than 10,000" and pages on up to there (filters narrow it).
    """

    cap = 10_000

    @cached_property
    def count(self) -> int:
        """Return the number of rows, or ``cap + 1`` when there are more than ``cap``."""
        rows = self.object_list
        if isinstance(rows, QuerySet):
            return rows.order_by()[: self.cap + 1].count()
        return len(rows)

    @property
    def is_capped(self) -> bool:
        """Return whether there are more rows than were counted."""
        return self.count > self.cap


class ReadOnlyAdmin(admin.ModelAdmin):
    """An admin whose rows are written by django_tq only: view (and delete where allowed)."""

    #: rows may be deleted by users with the delete permission
    allow_delete = True
    show_full_result_count = False  # a COUNT(*) over a large table on every page is not worth it
    paginator = CappedPaginator
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.allow_delete and super().has_delete_permission(request, obj)


class JSONTextField(forms.JSONField):
    """A JSON text area that says where the JSON is broken, and maps empty to ``empty``."""

    def __init__(self, *, empty: Any, example: str, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3, "class": "vLargeTextField"}))
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.empty = empty
        self.example = example

    def to_python(self, value: Any) -> Any:
        if self.disabled or not isinstance(value, str):
            return super().to_python(value)
        if not value.strip():
            return self.empty
        try:
            json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                _(
                    "Not valid JSON: %(error)s at line %(line)d, column %(column)d (e.g. %(example)s)."
                ),
                code="invalid",
                params={
                    "error": exc.msg,
                    "line": exc.lineno,
                    "column": exc.colno,
                    "example": self.example,
                },
            ) from None
        parsed = super().to_python(value)
        if serialization.has_nul(parsed):  # PostgreSQL cannot store it
            raise ValidationError(_("Strings cannot contain the NUL character."), code="invalid")
        return parsed
