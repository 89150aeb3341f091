"""``UniqueLock``: the enqueued task that holds a unique key, until it finishes or the lock expires."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class UniqueLock(models.Model):
    """A unique key taken by a queued or running task (``@task(unique=…)``, ``unique_key=``).

    The unique constraint on ``key`` is the lock: a second enqueue with the same key finds this
    row and returns its task instead of sending a duplicate. Deleted when the task finishes; a
    row past ``expires_at`` is taken over by the next enqueue.
    """

    key = models.CharField(_("key"), max_length=255, unique=True)
    task_id = models.CharField(_("task id"), max_length=255, db_index=True)
    expires_at = models.DateTimeField(_("expires at"))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("unique lock")
        verbose_name_plural = _("unique locks")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.key} → {self.task_id}"
