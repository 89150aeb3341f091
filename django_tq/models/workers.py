"""``WorkerState``: the heartbeat row each running worker keeps."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

#: a worker that has not beaten for this long is shown as lost
LOST_AFTER = timedelta(seconds=60)


class WorkerState(models.Model):
    """One worker (a ``tqworker`` process tree), updated by its parent every few seconds."""

    hostname = models.CharField(_("name"), max_length=255, unique=True)
    pid = models.PositiveIntegerField(_("pid"))
    queues = models.JSONField(_("queues"), default=list)
    pool = models.CharField(_("pool"), max_length=20)
    concurrency = models.PositiveIntegerField(_("concurrency"))
    processed = models.PositiveBigIntegerField(_("processed"), default=0)
    started_at = models.DateTimeField(_("started"))
    last_heartbeat = models.DateTimeField(_("last heartbeat"))
    stopped_at = models.DateTimeField(_("stopped"), null=True, blank=True)

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ["hostname"]
        permissions = [("control_workerstate", _("Can shut down and resize running workers"))]

    def __str__(self) -> str:
        return self.hostname

    def is_alive(self, now: datetime | None = None) -> bool:
        """Return whether the worker has beaten recently and has not stopped."""
        now = now or timezone.now()
        return self.stopped_at is None and now - self.last_heartbeat < LOST_AFTER
