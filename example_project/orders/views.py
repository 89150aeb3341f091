"""The shop's pages: place an order, watch its task, list recent orders, rebuild the report."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from django_tq import AsyncResult, states
from django_tq.models import GroupResult, TaskResult
from orders.forms import OrderForm
from orders.models import Order, SalesReport
from orders.tasks import charge_order, rebuild_report


def shop(request: HttpRequest) -> HttpResponse:
    """Show the order form and the recent orders; on a valid POST, place the order."""
    form = OrderForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            order = form.save()
            # The message is written in this transaction: if anything below fails, neither the
            # order nor the task exists. The id is usable at once.
            result = charge_order.delay(order.pk)
            order.charge_task_id = result.id
            order.save(update_fields=["charge_task_id"])
        return redirect("orders:task", task_id=result.id)
    orders = list(Order.objects.all()[:12])
    task_states = states_of([order.charge_task_id for order in orders])
    rows = [(order, task_states.get(order.charge_task_id, "")) for order in orders]
    return render(
        request,
        "orders/shop.html",
        {"form": form, "rows": rows, "report": SalesReport.objects.first()},
        status=400 if form.is_bound else 200,
    )


def states_of(task_ids: list[str]) -> dict[str, str]:
    """Return ``{task id: state}`` in one query (``AsyncResult(id).state`` is one query each)."""
    ids = [task_id for task_id in task_ids if task_id]
    return dict(TaskResult.objects.filter(task_id__in=ids).values_list("task_id", "state"))


@require_POST
def rebuild(request: HttpRequest) -> HttpResponse:
    """Enqueue a rebuild of the sales report and show its task (the running one, if any)."""
    task_id = str(uuid.uuid4())
    result = rebuild_report.apply_async(task_id=task_id)
    if result.id != task_id:  # rebuild_report is unique: a rebuild is queued or running
        messages.info(request, _("A rebuild is already under way: here it is."))
    return redirect("orders:task", task_id=result.id)


def describe(task_id: str) -> dict[str, Any]:
    """Return what the task page shows about ``task_id`` (raise 404 for an unknown id).

    A real shop would enqueue with ``apply_async(..., owner=request.user)`` and show a task only
    to its owner; the demo shows any task whose id you know (ids are random UUIDs).
    """
    result: AsyncResult[Any] = AsyncResult(task_id)
    state = result.state  # PENDING: never recorded (TRACK_ENQUEUED records QUEUED at .delay())
    if state == states.PENDING:
        raise Http404("No task with this id.")
    info = result.info  # the meta of PROGRESS, the return value, or the exception of a failure
    row = TaskResult.objects.get(task_id=task_id)
    ready = state in states.READY_STATES
    progress, label = 0, WAITING.get(state, "")
    if isinstance(info, dict) and "step" in info and "steps" in info:
        progress = round(100 * (int(info["step"]) - 0.5) / max(1, int(info["steps"])))
        label = str(info.get("label", ""))
    if ready:
        progress, label = 100, FINISHED.get(state, state.title())
    outcome = ""
    if isinstance(info, BaseException):
        outcome = f"{type(info).__name__}: {info}"
    elif state == states.SUCCESS and info is not None:
        outcome = info if isinstance(info, str) else _pretty(info)
    order = Order.objects.filter(charge_task_id=task_id).first()
    children = [
        {"id": child_id, "name": name.rpartition(".")[2], "queue": queue, "state": child_state}
        for child_id, name, queue, child_state in TaskResult.objects.filter(parent_id=task_id)
        .order_by("date_created")
        .values_list("task_id", "task_name", "queue", "state")
    ]
    members = chord_members(task_id)
    return {
        "id": task_id,
        "name": row.task_name,
        "state": state,
        "ready": ready,
        "queue": row.queue,
        "worker": row.worker or "-",
        "attempt": row.retries + 1,
        "progress": progress,
        "label": label,
        "outcome": outcome,
        "order": None
        if order is None
        else {
            "id": order.pk,
            "summary": str(order),
            "status": order.get_status_display(),
            "receipt": "sent" if order.receipt_sent_at else "not sent",
        },
        "children": children,
        "members": members,
        "group_id": members[0]["group_id"] if members else "",
        "done": ready
        and all(item["state"] in states.READY_STATES for item in [*children, *members]),
    }


def chord_members(task_id: str) -> list[dict[str, Any]]:
    """Return the header tasks of the chord ``task_id`` was replaced with, in the header's order.

    ``rebuild_report`` calls ``self.replace(chord(...))``: the header tasks are recorded with the
    rebuild as their root and the chord's group id, and the body takes over the rebuild's id.
    """
    rows = list(
        TaskResult.objects.filter(root_id=task_id, group_id__isnull=False)
        .exclude(task_id=task_id)
        .values("task_id", "task_name", "args", "state", "group_id")
    )
    header = GroupResult.objects.filter(group_id__in={row["group_id"] for row in rows})
    order = {
        member_id: number
        for number, member_id in enumerate(
            header.values_list("result_ids", flat=True).first() or []
        )
    }
    rows.sort(key=lambda row: order.get(row["task_id"], len(order)))
    return [
        {
            "id": row["task_id"],
            "name": row["task_name"].rpartition(".")[2],
            "args": ", ".join(map(str, row["args"] or ())),
            "state": row["state"],
            "group_id": row["group_id"],
        }
        for row in rows
    ]


WAITING = {
    states.QUEUED: "Waiting for a worker",
    states.RECEIVED: "A worker took it",
    states.STARTED: "Running",
    states.RETRY: "Failed; will retry",
}
FINISHED = {
    states.SUCCESS: "Done",
    states.FAILURE: "Failed",
    states.REVOKED: "Revoked",
    states.DEAD: "Dead-lettered",
}


def _pretty(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str)


@require_GET
def task_page(request: HttpRequest, task_id: str) -> HttpResponse:
    """Show one task's state; a small script polls :func:`task_status` until it is done."""
    context = {
        "task": describe(task_id),
        "status_url": reverse("orders:task-status", args=[task_id]),
    }
    return render(request, "orders/task.html", context)


@require_GET
def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    """Return the task page's data as JSON (what the page polls)."""
    return JsonResponse(describe(task_id))
