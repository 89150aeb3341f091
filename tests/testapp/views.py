"""A view that enqueues, for the tests of the ``tq_worker`` fixture (docs/testing.md's example)."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from tests.testapp.models import Order
from tests.testapp.tasks import order_exists, record


@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    """Create an order and, in the same transaction, enqueue the task that looks for it."""
    with transaction.atomic():
        order = Order.objects.create(number=request.POST["number"])
        result = order_exists.delay(order.number)
    return JsonResponse({"task_id": result.id}, status=201)


async def enqueue_async(request: HttpRequest) -> JsonResponse:
    """Enqueue from an ``async def`` view: ``?how=delay`` (the sync call) or ``adelay``."""
    number = request.GET.get("number", "1")
    if request.GET.get("how") == "adelay":
        result = await record.adelay(f"adelay:{number}")
    else:
        result = record.delay(f"delay:{number}")
    return JsonResponse({"task_id": result.id, "state": await result.astate()}, status=201)
