"""An order, and the sales report a task rebuilds from the orders."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils.translation import gettext_lazy as _

#: what the shop sells: code -> (name, unit price)
PRODUCTS: dict[str, tuple[str, Decimal]] = {
    "mug": ("Coffee mug", Decimal("12.00")),
    "tee": ("T-shirt", Decimal("24.00")),
    "hoodie": ("Hoodie", Decimal("49.00")),
    "poster": ("Poster", Decimal("8.50")),
}


class Order(models.Model):
    """One order. ``charge_task_id`` is the task that charges it (its state is in TaskResult)."""

    class Status(models.TextChoices):
        NEW = "new", _("New")
        CHARGING = "charging", _("Charging")
        PAID = "paid", _("Paid")
        DECLINED = "declined", _("Declined")

    class Outcome(models.TextChoices):
        """What the demo payment gateway will do with this order's card."""

        APPROVE = "approve", _("Card is approved")
        DECLINE = "decline", _("Card is declined (the task fails)")
        FLAKY = "flaky", _("Gateway times out once (the task retries)")

    email = models.EmailField(_("email"))
    product = models.CharField(
        _("product"), max_length=20, choices=[(k, v[0]) for k, v in PRODUCTS.items()]
    )
    quantity = models.PositiveIntegerField(_("quantity"), default=1)
    total = models.DecimalField(_("total"), max_digits=10, decimal_places=2)
    status = models.CharField(
        _("status"), max_length=20, choices=Status.choices, default=Status.NEW
    )
    payment_outcome = models.CharField(
        _("payment outcome"), max_length=20, choices=Outcome.choices, default=Outcome.APPROVE
    )
    charge_task_id = models.CharField(
        _("charge task id"), max_length=255, blank=True, db_index=True
    )
    transaction_id = models.CharField(_("transaction id"), max_length=64, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    paid_at = models.DateTimeField(_("paid"), null=True, blank=True)
    receipt_sent_at = models.DateTimeField(_("receipt sent"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("order")
        verbose_name_plural = _("orders")

    def __str__(self) -> str:
        return f"#{self.pk} {self.quantity} x {self.get_product_display()} ({self.status})"


class SalesReport(models.Model):
    """Totals over every order, rebuilt by the ``rebuild_report`` task."""

    generated_at = models.DateTimeField(_("generated"), auto_now_add=True)
    orders = models.PositiveIntegerField(_("orders"))
    paid_orders = models.PositiveIntegerField(_("paid orders"))
    revenue = models.DecimalField(_("revenue"), max_digits=12, decimal_places=2)
    by_product = models.JSONField(_("paid units by product"), default=dict)
    task_id = models.CharField(_("task id"), max_length=255, blank=True)

    class Meta:
        ordering = ["-generated_at", "-id"]
        get_latest_by = "generated_at"
        verbose_name = _("sales report")
        verbose_name_plural = _("sales reports")

    def __str__(self) -> str:
        return f"{self.paid_orders}/{self.orders} paid, {self.revenue}"
