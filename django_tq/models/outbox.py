"""``OutboxMessage``: a message written in the caller's transaction, published after it commits."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class OutboxMessage(models.Model):
    """An encoded message waiting to be handed to Redis or RabbitMQ (``TQ["OUTBOX"]``).

    Written in the transaction that enqueued it, so it exists exactly when the caller's data
    does. Published right after the commit, or, if that did not happen (a crash, the broker
    down), by the relay in any live worker (``SKIP LOCKED``); deleted once published.
    """

    id = models.BigAutoField(primary_key=True)
    task_id = models.CharField(_("task id"), max_length=255, db_index=True)
    task_name = models.CharField(_("task name"), max_length=255)
    queue = models.CharField(_("queue"), max_length=200)
    priority = models.SmallIntegerField(_("priority"), null=True, blank=True)
    not_before = models.DateTimeField(_("not before"), null=True, blank=True)
    headers = models.JSONField(_("headers"))
    body = models.TextField(_("body"))
    content_type = models.CharField(_("content type"), max_length=200)
    created_at = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] to {self.queue}"
