"""``ImportedPeriodicTask``: a periodic task copied from django-celery-beat, and what was copied."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from django_tq.models.periodic_tasks import PeriodicTask


class ImportedPeriodicTask(models.Model):
    """A periodic task ``tqimport celery-beat`` copied, and the values it copied the last time.

    A later import compares django-celery-beat's values with these rather than with the task
    here: what changed there since is applied, edits made here to other fields are kept, a task
    of the same name created here is never taken over, and one deleted here is not imported again.
    """

    source_name = models.CharField(_("name in django-celery-beat"), max_length=200, unique=True)
    periodic_task = models.OneToOneField(
        PeriodicTask,
        verbose_name=_("periodic task"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    values = models.JSONField(_("values imported"))
    date_imported = models.DateTimeField(_("imported"), auto_now_add=True)
    date_updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("imported periodic task")
        verbose_name_plural = _("imported periodic tasks")
        ordering = ["source_name"]

    def __str__(self) -> str:
        return self.source_name
