"""Metrics kept for the admin dashboard: queue depth samples, and the dashboard's admin entry."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import models
from django.utils.translation import gettext_lazy as _


def sample_minute(moment: datetime) -> datetime:
    """Return ``moment`` rounded down to its minute: the one sample slot it falls in."""
    return moment.replace(second=0, microsecond=0)


class QueueDepthSampleQuerySet(models.QuerySet["QueueDepthSample"]):
    """Writing and pruning samples."""

    def record(self, depths: Iterable[tuple[str, int]], now: datetime) -> int:
        """Store one sample per queue for the minute of ``now``; return how many queues.

        Every worker samples: the first to write a queue's minute wins, the others' rows are
        ignored by the unique constraint, so the history has one point per queue and minute
        however many workers run.
        """
        minute = sample_minute(now)
        rows = [self.model(queue=queue, depth=depth, sampled_at=minute) for queue, depth in depths]
        self.bulk_create(rows, ignore_conflicts=True)
        return len(rows)

    def older_than(self, moment: datetime) -> QueueDepthSampleQuerySet:
        """Samples taken before ``moment`` (what cleanup deletes)."""
        return self.filter(sampled_at__lt=moment)


class QueueDepthSample(models.Model):
    """How many messages waited in one queue at one minute (written by the workers)."""

    queue = models.CharField(_("queue"), max_length=200)
    depth = models.PositiveIntegerField(_("depth"))
    sampled_at = models.DateTimeField(_("sampled at"))

    objects = QueueDepthSampleQuerySet.as_manager()

    class Meta:
        verbose_name = _("queue depth sample")
        verbose_name_plural = _("queue depth samples")
        ordering = ["sampled_at", "queue"]
        constraints = [
            models.UniqueConstraint(fields=["queue", "sampled_at"], name="tq_depth_one_per_minute")
        ]
        indexes = [models.Index(fields=["sampled_at"], name="tq_depth_sampled")]

    def __str__(self) -> str:
        return f"{self.queue}: {self.depth} at {self.sampled_at:%Y-%m-%d %H:%M}"


class Dashboard(models.Model):
    """No table: the dashboard's entry in the admin index (throughput, failures, queue depth)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_metrics", _("Can read the Prometheus metrics"))]
        verbose_name = _("dashboard")
        verbose_name_plural = _("dashboard")

    def __str__(self) -> str:
        return str(self._meta.verbose_name)
