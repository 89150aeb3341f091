"""``DeadLetter``: a message that cannot run, kept with the reason instead of being lost."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class DeadLetter(models.Model):
    """A message taken off its queue because it is undecodable, unknown, poison or unsigned."""

    task_id = models.CharField(_("task id"), max_length=255, null=True, blank=True, db_index=True)
    task_name = models.CharField(_("task name"), max_length=255, blank=True, default="")
    queue = models.CharField(_("queue"), max_length=200, blank=True, default="")
    reason = models.TextField(_("reason"))
    content_type = models.CharField(_("content type"), max_length=200, blank=True, default="")
    headers = models.JSONField(_("headers"), null=True, blank=True)
    payload = models.TextField(_("raw payload"), blank=True, default="")
    worker = models.CharField(_("worker"), max_length=255, blank=True, default="")
    created_at = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("dead letter")
        verbose_name_plural = _("dead letters")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.task_name or '?'}[{self.task_id or '?'}]: {self.reason[:80]}"
