"""``Revocation``: a task id that must not run (or must stop), kept until results expire."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Revocation(models.Model):
    """A revoked task id. Durable: every worker loads it, also workers started later."""

    task_id = models.CharField(_("task id"), max_length=255, unique=True)
    terminate = models.BooleanField(_("terminate if running"), default=False)
    signal = models.CharField(_("signal"), max_length=20, default="SIGTERM")
    created_at = models.DateTimeField(_("revoked at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("revocation")
        verbose_name_plural = _("revocations")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.task_id
