"""``TaskOverride``: a task's rate or time limits changed at run time, until reset."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class TaskOverride(models.Model):
    """Limits set with ``tqcontrol rate_limit`` / ``time_limit`` for one task name.

    Every consumer re-reads the rows changed in the last second, so a change reaches every worker
    — also workers started later — and lasts until it is reset (the field set back to null; the
    row stays, so the reset is read the same way).
    """

    task_name = models.CharField(_("task name"), max_length=255, unique=True)
    rate_limit = models.CharField(_("rate limit"), max_length=50, null=True, blank=True)
    time_limit = models.FloatField(_("time limit"), null=True, blank=True)
    soft_time_limit = models.FloatField(_("soft time limit"), null=True, blank=True)
    updated_at = models.DateTimeField(_("changed"), db_index=True)

    class Meta:
        verbose_name = _("task override")
        verbose_name_plural = _("task overrides")
        ordering = ["task_name"]

    def __str__(self) -> str:
        return self.task_name
