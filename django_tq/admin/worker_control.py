"""Live actions on the workers screen: shut down warm, grow or shrink the pool.

Like Django's "delete selected", an action first shows what it will do (the workers, and for a
resize how many consumers); confirming posts the action again (same permission check —
``django_tq.control_workerstate`` — and CSRF token) and sends the command through
:mod:`django_tq.control`. Each worker's reply, or its silence, is reported as a message.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

from django_tq import control
from django_tq.models import WorkerState

TEMPLATE = "admin/django_tq/workerstate/control_confirmation.html"
#: seconds the action waits for the workers' replies
TIMEOUT = 3.0
TITLES = {
    "shutdown": _("Shut down workers"),
    "pool_grow": _("Grow worker pools"),
    "pool_shrink": _("Shrink worker pools"),
}


class ResizeForm(forms.Form):
    n = forms.IntegerField(label=_("consumers"), min_value=1, max_value=100, initial=1)


def confirm_and_send(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[WorkerState],
    command: str,
) -> TemplateResponse | None:
    """Show the confirmation page for ``command``; once confirmed, send it to the live workers."""
    rows = list(queryset.order_by("hostname"))
    alive = [row for row in rows if row.is_alive()]
    resize = command != "shutdown"
    form = ResizeForm(request.POST if request.POST.get("post") == "yes" else None)
    if request.POST.get("post") == "yes" and (not resize or form.is_valid()):
        arguments = {"n": form.cleaned_data["n"]} if resize else {}
        _send(modeladmin, request, [row.hostname for row in alive], command, arguments)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": TITLES[command],
        "subtitle": None,
        "opts": modeladmin.model._meta,
        "rows": rows,
        "alive": alive,
        "command": command,
        "action": f"{command}_workers",
        "form": form if resize else None,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, TEMPLATE, context)


def _send(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    hostnames: list[str],
    command: str,
    arguments: dict[str, int],
) -> None:
    if not hostnames:
        modeladmin.message_user(
            request, _("None of the selected workers is alive."), messages.WARNING
        )
        return
    replies = {
        reply.hostname: reply
        for reply in control.broadcast(command, arguments, destination=hostnames, timeout=TIMEOUT)
    }
    for hostname in hostnames:
        reply = replies.get(hostname)
        if reply is None:
            modeladmin.message_user(
                request, _("%(worker)s did not answer.") % {"worker": hostname}, messages.ERROR
            )
        elif reply.error:
            modeladmin.message_user(
                request,
                _("%(worker)s refused: %(error)s") % {"worker": hostname, "error": reply.error},
                messages.ERROR,
            )
        else:
            ok = reply.payload.get("ok") if isinstance(reply.payload, dict) else reply.payload
            modeladmin.message_user(
                request, _("%(worker)s: %(reply)s") % {"worker": hostname, "reply": ok}
            )
