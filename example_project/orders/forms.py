"""The order form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from orders.models import PRODUCTS, Order


class OrderForm(forms.ModelForm):
    """Place an order; the total is computed from the catalogue, never taken from the client."""

    class Meta:
        model = Order
        fields = ["email", "product", "quantity", "payment_outcome"]
        widgets = {
            "email": forms.EmailInput(
                attrs={"placeholder": "you@example.com", "autocomplete": "email"}
            ),
            "quantity": forms.NumberInput(attrs={"min": 1, "max": 20}),
            "payment_outcome": forms.RadioSelect,
        }
        labels = {"payment_outcome": _("Demo: what should the payment gateway do?")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["product"].choices = [
            (code, f"{name} — {price}") for code, (name, price) in PRODUCTS.items()
        ]
        self.fields["product"].initial = next(iter(PRODUCTS))

    def clean_quantity(self) -> int:
        quantity = self.cleaned_data["quantity"]
        if not 1 <= quantity <= 20:
            raise forms.ValidationError(_("Order between 1 and 20 items."))
        return quantity

    def save(self, commit: bool = True) -> Order:
        order = super().save(commit=False)
        order.total = PRODUCTS[order.product][1] * order.quantity
        if commit:
            order.save()
        return order
