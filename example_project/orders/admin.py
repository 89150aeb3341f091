"""Admin screens for the shop's own models (django_tq registers its screens by itself)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.translation import gettext_lazy as _

from orders.models import Order, SalesReport


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "email",
        "product",
        "quantity",
        "total",
        "status",
        "charge_task",
        "created_at",
    ]
    list_filter = ["status", "product", "payment_outcome", "created_at"]
    search_fields = ["email", "=charge_task_id"]
    readonly_fields = [
        "charge_task_id",
        "transaction_id",
        "paid_at",
        "receipt_sent_at",
        "created_at",
    ]

    @admin.display(description=_("charge task"))
    def charge_task(self, order: Order) -> str:
        if not order.charge_task_id:
            return "-"
        url = (
            reverse("admin:django_tq_taskresult_changelist")
            + "?"
            + urlencode({"task_id": order.charge_task_id})
        )
        return format_html('<a href="{}">{}</a>', url, order.charge_task_id[:8])


@admin.register(SalesReport)
class SalesReportAdmin(admin.ModelAdmin):
    list_display = ["generated_at", "orders", "paid_orders", "revenue"]
    readonly_fields = ["generated_at", "orders", "paid_orders", "revenue", "by_product", "task_id"]
