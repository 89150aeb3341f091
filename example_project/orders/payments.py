"""A pretend payment gateway, so the demo can show success, failure and retries."""

from __future__ import annotations

import uuid

from orders.models import Order


class PaymentDeclined(Exception):
    """The card was declined: retrying will not help."""


class GatewayUnavailable(ConnectionError):
    """The gateway did not answer: worth retrying."""


def charge_card(order: Order, *, attempt: int) -> str:
    """Charge ``order.total``; return the gateway's transaction id."""
    if order.payment_outcome == Order.Outcome.DECLINE:
        raise PaymentDeclined(f"Card declined for order #{order.pk} ({order.total})")
    if order.payment_outcome == Order.Outcome.FLAKY and attempt == 0:
        raise GatewayUnavailable("Payment gateway timed out")
    return f"txn_{uuid.uuid4().hex[:12]}"
