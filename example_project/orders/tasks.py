"""The shop's tasks. django_tq imports every installed app's ``tasks.py`` at start-up.

* ``charge_order`` — bound (``self``): reports progress with ``update_state("PROGRESS")``, retries
  by itself when the gateway is unavailable, fails for a declined card, then enqueues the receipt
  in the same transaction that marks the order paid.
* ``send_receipt`` — goes to the ``mail`` queue (start a worker with ``-Q default,mail``), at most
  30 a minute across every worker (``rate_limit``): the mail provider's limit.
* ``rebuild_report`` — recomputes the sales report as a chord: one ``product_figures`` task per
  product, then ``write_report`` with their results. It is unique: while a rebuild is queued or
  running, sending another returns that one. Beat runs it every minute (``TQ["BEAT_SCHEDULE"]`` in
  ``shop/settings.py``).
* ``count_open_orders`` — a periodic task declared with ``@periodic_task``: every 30 seconds.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any, NoReturn

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from django_tq import chord, get_task_logger, periodic_task, task
from orders.models import PRODUCTS, Order, SalesReport
from orders.payments import GatewayUnavailable, PaymentDeclined, charge_card

logger = get_task_logger(__name__)

CHARGE_STEPS = (
    "Checking stock",
    "Authorising the card",
    "Capturing the payment",
    "Writing the invoice",
)


@task(bind=True, autoretry_for=(GatewayUnavailable,), max_retries=3, default_retry_delay=2)
def charge_order(self: Any, order_id: int) -> dict[str, Any]:
    """Charge an order, step by step, and enqueue its receipt once it is paid."""
    order = Order.objects.get(pk=order_id)
    if order.status == Order.Status.PAID:
        # A redelivered message (the worker died after charging) must not charge twice.
        return {"order": order.pk, "transaction": order.transaction_id, "already_paid": True}
    Order.objects.filter(pk=order.pk).update(status=Order.Status.CHARGING)
    transaction_id = ""
    for number, label in enumerate(CHARGE_STEPS, start=1):
        self.update_state(
            state="PROGRESS",
            meta={
                "step": number,
                "steps": len(CHARGE_STEPS),
                "label": label,
                "attempt": self.request.retries + 1,
            },
        )
        time.sleep(settings.ORDERS_STEP_SECONDS)
        if label == "Authorising the card":
            try:
                transaction_id = charge_card(order, attempt=self.request.retries)
            except PaymentDeclined:
                Order.objects.filter(pk=order.pk).update(status=Order.Status.DECLINED)
                raise
    with transaction.atomic():
        order.status = Order.Status.PAID
        order.transaction_id = transaction_id
        order.paid_at = timezone.now()
        order.save(update_fields=["status", "transaction_id", "paid_at"])
        # Published with the commit of this block: the receipt never goes out for an order
        # whose payment was not recorded.
        send_receipt.delay(order.pk)
    logger.info("Order #%s paid (%s)", order.pk, transaction_id)
    return {"order": order.pk, "total": str(order.total), "transaction": transaction_id}


@task(queue="mail", rate_limit="30/m")
def send_receipt(order_id: int) -> str:
    """Mail the customer a receipt (the console email backend prints it)."""
    order = Order.objects.get(pk=order_id)
    if order.receipt_sent_at is not None:
        return f"receipt for order #{order.pk} was already sent"
    name, price = PRODUCTS[order.product]
    send_mail(
        subject=f"Your receipt for order #{order.pk}",
        message=f"{order.quantity} x {name} at {price} = {order.total}\nTransaction: {order.transaction_id}\n",
        from_email=None,
        recipient_list=[order.email],
    )
    Order.objects.filter(pk=order.pk).update(receipt_sent_at=timezone.now())
    return f"receipt for order #{order.pk} sent to {order.email}"


@task(bind=True, unique=True)
def rebuild_report(self: Any) -> NoReturn:
    """Rebuild the sales report: figures per product in parallel, then one report from them.

    ``self.replace`` hands this task's id to the chord's body, so the rebuild's result is the
    report ``write_report`` returns, and the unique key stays held until the report is written.
    """
    self.replace(chord((product_figures.s(code) for code in PRODUCTS), write_report.s()))


@task
def product_figures(product: str) -> dict[str, Any]:
    """Return one product's figures: its orders, paid orders, paid units and revenue."""
    orders = Order.objects.filter(product=product)
    paid = orders.filter(status=Order.Status.PAID)
    totals = paid.aggregate(units=Sum("quantity"), revenue=Sum("total"))
    return {
        "product": product,
        "orders": orders.count(),
        "paid_orders": paid.count(),
        "units": totals["units"] or 0,
        "revenue": str((totals["revenue"] or Decimal("0")).quantize(Decimal("0.01"))),
    }


@task
def write_report(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """Store the SalesReport that adds up ``figures`` (one dict per product); return its totals."""
    report = SalesReport.objects.create(
        orders=sum(item["orders"] for item in figures),
        paid_orders=sum(item["paid_orders"] for item in figures),
        revenue=sum((Decimal(item["revenue"]) for item in figures), Decimal("0.00")),
        by_product={item["product"]: item["units"] for item in figures if item["units"]},
        task_id=write_report.request.id or "",
    )
    return {
        "orders": report.orders,
        "paid_orders": report.paid_orders,
        "revenue": str(report.revenue),
        "by_product": report.by_product,
    }


@periodic_task(run_every=timedelta(seconds=30))
def count_open_orders() -> int:
    """Log how many orders are not settled yet."""
    open_orders = Order.objects.filter(status__in=[Order.Status.NEW, Order.Status.CHARGING]).count()
    logger.info("%d open order(s)", open_orders)
    return open_orders
