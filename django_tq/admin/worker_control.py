"""Live actions on the workers screen: shut down warm, grow or shrink the pool, add or cancel a
queue.

Like Django's "delete selected", an action first shows what it will do (the workers, and how
many consumers or which queue); confirming posts the action again (same permission check —
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
from django_tq.routing import QUEUE_NAME

TEMPLATE = "admin/django_tq/workerstate/control_confirmation.html"
#: seconds the action waits for the workers' replies
TIMEOUT = 3.0
TITLES = {
    "shutdown": _("Shut down workers"),
    "pool_grow": _("Grow worker pools"),
    "pool_shrink": _("Shrink worker pools"),
    "add_consumer": _("Consume another queue"),
    "cancel_consumer": _("Stop consuming a queue"),
}


class ResizeForm(forms.Form):
    n = forms.IntegerField(label=_("consumers"), min_value=1, max_value=100, initial=1)


class QueueForm(forms.Form):
    queue = forms.RegexField(label=_("queue"), regex=QUEUE_NAME, max_length=200)


FORMS: dict[str, type[forms.Form]] = {
    "pool_grow": ResizeForm,
    "pool_shrink": ResizeForm,
    "add_consumer": QueueForm,
    "cancel_consumer": QueueForm,
}


def confirm_and_send(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[WorkerState],
    command: str,
) -> TemplateResponse | None:
    """Show the confirmation page for ``command``; once confirmed, send it to the live workers."""
    rows = list(queryset.order_by("hostname"))
    alive = [row for row in rows if row.is_alive()]
    confirmed = request.POST.get("post") == "yes"
    form_class = FORMS.get(command)
    form = form_class(request.POST if confirmed else None) if form_class else None
    if confirmed and (form is None or form.is_valid()):
        arguments = dict(form.cleaned_data) if form is not None else {}
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
        "form": form,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, TEMPLATE, context)


def _send(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    hostnames: list[str],
    command: str,
    arguments: dict[str, object],
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
