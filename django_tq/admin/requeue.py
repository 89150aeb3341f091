"""Requeueing task results from the admin: a confirmation page to change the queue and arguments.

Like Django's "delete selected" action, the requeue action first shows what it will do. There the
queue can be changed for every selected task, and the positional and keyword arguments too when a
single task is selected. Arguments are JSON as stored (tagged values such as
``{"__tq__": "datetime", "v": …}`` included), checked against the task's signature before
anything is sent. Confirming posts the action again (same permission check, CSRF token), and
:func:`django_tq.control.requeue` sends each task as a new one.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

import django_tq.admin.display as display
from django_tq import control, serialization
from django_tq.admin.display import JSONTextField
from django_tq.exceptions import DecodeError
from django_tq.models import TaskResult
from django_tq.registry import registry
from django_tq.routing import QUEUE_NAME

#: the most tasks one requeue sends (the confirmation page lists each of them)
MAX_REQUEUE = 1000
TEMPLATE = "admin/django_tq/taskresult/requeue_confirmation.html"


class RequeueForm(forms.Form):
    """The queue, and for a single task its arguments, to requeue with."""

    queue = forms.RegexField(
        label=_("queue"),
        regex=QUEUE_NAME,
        max_length=200,
        required=False,
        help_text=_("Leave empty to send each task to the queue it ran on."),
    )
    args = JSONTextField(
        label=_("positional arguments"),
        empty=None,
        example='[1, "a"]',
        help_text=_("Leave empty to keep the stored arguments."),
    )
    kwargs = JSONTextField(
        label=_("keyword arguments"),
        empty=None,
        example='{"order_id": 1}',
        help_text=_("Leave empty to keep the stored keyword arguments."),
    )

    def __init__(self, *args: Any, result: TaskResult | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result = result
        if result is None:  # several tasks: only the queue is common to them
            del self.fields["args"], self.fields["kwargs"]
        else:
            self.fields["args"].initial = result.args or []
            self.fields["kwargs"].initial = result.kwargs or {}

    def clean_args(self) -> Any:
        value = self.cleaned_data["args"]
        if value is None:
            return None
        if not isinstance(value, list):
            raise forms.ValidationError(
                _('Positional arguments must be a JSON list, e.g. [1, "a"].')
            )
        return self._rebuilt(value)

    def clean_kwargs(self) -> Any:
        value = self.cleaned_data["kwargs"]
        if value is None:
            return None
        if not isinstance(value, dict):
            raise forms.ValidationError(
                _('Keyword arguments must be a JSON object, e.g. {"order_id": 1}.')
            )
        return self._rebuilt(value)

    def _rebuilt(self, value: Any) -> Any:
        try:
            return serialization.from_jsonable(value)
        except (DecodeError, ArithmeticError) as exc:  # a bad "decimal" escapes as ArithmeticError
            raise forms.ValidationError(_("Invalid tagged value: %s") % exc) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        result, changes = self.result, self.changes()
        if result is not None and (changes["args"] is not None or changes["kwargs"] is not None):
            mismatch = registry.signature_mismatch(  # binding needs the count, not the types
                result.task_name,
                result.args or [] if changes["args"] is None else changes["args"],
                result.kwargs or {} if changes["kwargs"] is None else changes["kwargs"],
            )
            if mismatch:
                raise forms.ValidationError(mismatch)
        return cleaned

    def changes(self) -> dict[str, Any]:
        """Return the ``control.requeue`` arguments for what was changed (``None``: keep)."""
        changed, cleaned = set(self.changed_data), self.cleaned_data
        return {
            "args": cleaned.get("args") if "args" in changed else None,
            "kwargs": cleaned.get("kwargs") if "kwargs" in changed else None,
            "queue": cleaned.get("queue") or None,
        }


def requeue_selected(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[TaskResult]
) -> TemplateResponse | None:
    """Show the confirmation page; once confirmed, requeue the failed, dead or revoked tasks."""
    rows = list(queryset.order_by("-date_created", "-id")[: MAX_REQUEUE + 1])
    if len(rows) > MAX_REQUEUE:
        modeladmin.message_user(
            request,
            _("Select at most %(count)d tasks to requeue at once.") % {"count": MAX_REQUEUE},
            messages.ERROR,
        )
        return None
    requeueable = [row for row in rows if row.state in control.REQUEUEABLE]
    single = requeueable[0] if len(requeueable) == 1 else None
    if request.POST.get("post") == "yes":
        form = RequeueForm(request.POST, result=single)
        if form.is_valid():
            _send(modeladmin, request, rows, form.changes())
            return None
    else:
        form = RequeueForm(result=single)
    opts = modeladmin.model._meta
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": _("Requeue tasks"),
        "subtitle": None,
        "opts": opts,
        "rows": rows,
        "table": [(row, display.state_badge(row.state)) for row in rows],
        "requeueable": requeueable,
        "skipped": [row for row in rows if row.state not in control.REQUEUEABLE],
        "form": form,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "media": modeladmin.media + form.media,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, TEMPLATE, context)


def _send(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    rows: list[TaskResult],
    changes: dict[str, Any],
) -> None:
    sent, skipped = 0, []
    for row in rows:
        try:
            control.requeue(row.task_id, owner=row.owner_id, **changes)
        except (control.NotRequeueable, LookupError):
            skipped.append(row.task_id)
        else:
            sent += 1
    modeladmin.message_user(request, _("Requeued %(count)d task(s).") % {"count": sent})
    if skipped:
        modeladmin.message_user(
            request,
            _("Not requeued (only FAILURE, DEAD or REVOKED tasks can be): %(ids)s")
            % {"ids": ", ".join(skipped)},
            messages.WARNING,
        )
