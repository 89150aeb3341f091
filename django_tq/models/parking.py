"""``ParkedMessage``: a message whose ETA is far away, kept in the database until it is due."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class ParkedMessage(models.Model):
    """A message with an ETA beyond ``ETA_HORIZON_SECONDS``, waiting to be published.

    Not held by any worker (no memory, no lease, no visibility timeout), written in the caller's
    transaction, and published by whichever live worker finds it due first (``SKIP LOCKED``).
    """

    id = models.BigAutoField(primary_key=True)
    task_id = models.CharField(_("task id"), max_length=255, db_index=True)
    task_name = models.CharField(_("task name"), max_length=255)
    queue = models.CharField(_("queue"), max_length=200)
    priority = models.SmallIntegerField(_("priority"), null=True, blank=True)
    due_at = models.DateTimeField(_("due at"), db_index=True)
    headers = models.JSONField(_("headers"))
    body = models.TextField(_("body"))
    content_type = models.CharField(_("content type"), max_length=200)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("parked message")
        verbose_name_plural = _("parked messages")
        ordering = ["due_at", "id"]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] due {self.due_at:%Y-%m-%d %H:%M:%S}"
