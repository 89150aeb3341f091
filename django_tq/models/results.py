"""``TaskResult``: one row per task id, from enqueue (QUEUED) to its final state."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from django_tq import states
from django_tq.models.indexes import PartialIndex


class TaskResultQuerySet(models.QuerySet["TaskResult"]):
    """Queries the admin, REST API and cleanup share."""

    def ready(self) -> TaskResultQuerySet:
        """Rows in a final state."""
        return self.filter(state__in=states.READY_STATES)

    def done_before(self, moment: Any) -> TaskResultQuerySet:
        """Final rows finished before ``moment`` (what cleanup deletes)."""
        return self.ready().filter(date_done__lt=moment)


class TaskResult(models.Model):
    """The state, arguments and outcome of one task call."""

    task_id = models.CharField(_("task id"), max_length=255, unique=True)
    task_name = models.CharField(_("task name"), max_length=255)
    state = models.CharField(_("state"), max_length=50, default=states.QUEUED)
    args = models.JSONField(_("positional arguments"), null=True, blank=True)
    kwargs = models.JSONField(_("keyword arguments"), null=True, blank=True)
    result = models.JSONField(_("result"), null=True, blank=True)
    traceback = models.TextField(_("traceback"), blank=True, default="")
    meta = models.JSONField(_("meta"), null=True, blank=True)
    queue = models.CharField(_("queue"), max_length=200, blank=True, default="")
    #: 0-9 (9 highest) as sent; None: the broker's default
    priority = models.PositiveSmallIntegerField(_("priority"), null=True, blank=True)
    worker = models.CharField(_("worker"), max_length=255, blank=True, default="")
    retries = models.PositiveIntegerField(_("retries"), default=0)
    delivery_count = models.PositiveIntegerField(_("deliveries"), default=0)
    eta = models.DateTimeField(_("ETA"), null=True, blank=True)
    expires = models.DateTimeField(_("expires"), null=True, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        db_index=False,  # tq_result_owner_created leads with it
    )
    parent_id = models.CharField(_("parent id"), max_length=255, null=True, blank=True)
    root_id = models.CharField(_("root id"), max_length=255, null=True, blank=True)
    group_id = models.CharField(_("group id"), max_length=255, null=True, blank=True)
    #: this chord header task's final state was counted by its chord (never counted twice)
    chord_counted = models.BooleanField(_("counted by its chord"), default=False)
    date_created = models.DateTimeField(_("created"), auto_now_add=True)
    date_started = models.DateTimeField(_("started"), null=True, blank=True)
    date_done = models.DateTimeField(_("done"), null=True, blank=True)

    objects = TaskResultQuerySet.as_manager()

    class Meta:
        verbose_name = _("task result")
        verbose_name_plural = _("task results")
        permissions = [("enqueue_task", _("Can enqueue tasks over the API"))]
        ordering = ["-date_created", "-id"]
        # Every write of a row (QUEUED insert, STARTED, final state) changes indexed columns
        # (state, worker, date_done): none is a HOT update, so each one inserts into every index
        # whose predicate the row meets. Columns most rows leave NULL (an owner, a group, a
        # parent, date_done until the end) are indexed only where set: the queries on them
        # (``= value``, ranges) imply IS NOT NULL, so they still use the index (EXPLAIN in
        # tests/core/test_result_indexes.py). A plain task's row pays for 8 indexes, not 14.
        # MySQL and MariaDB have no partial indexes: these are full ones there (PartialIndex).
        indexes = [
            models.Index(fields=["state", "-date_created"], name="tq_result_state_created"),
            models.Index(fields=["task_name", "-date_created"], name="tq_result_name_created"),
            models.Index(fields=["queue", "-date_created"], name="tq_result_queue_created"),
            models.Index(fields=["worker", "-date_created"], name="tq_result_worker_created"),
            models.Index(fields=["-date_created", "-id"], name="tq_result_created"),
            PartialIndex(
                fields=["date_done"],
                name="tq_result_done",
                where=models.Q(date_done__isnull=False),
            ),
            PartialIndex(
                fields=["owner", "-date_created"],
                name="tq_result_owner_created",
                where=models.Q(owner__isnull=False),
            ),
            PartialIndex(
                fields=["group_id"],
                name="tq_result_group",
                where=models.Q(group_id__isnull=False),
            ),
            models.Index(fields=["root_id"], name="tq_result_root"),
            PartialIndex(
                fields=["parent_id"],
                name="tq_result_parent",
                where=models.Q(parent_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] {self.state}"
