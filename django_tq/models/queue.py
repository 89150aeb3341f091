"""``QueueMessage``: the queue of the ``django://`` transport, one row per message."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class QueueMessage(models.Model):
    """A message waiting in, or leased from, a ``django://`` queue.

    A row is visible when ``not_before`` has passed and it holds no live lease. A consumer claims
    it by setting ``lease_owner``/``lease_expires_at`` (and bumping ``delivery_count``), renews the
    lease while the task runs, and deletes the row when it acks. A lease that runs out makes the
    row visible again: the message of a crashed worker is redelivered.

    The only index a claim writes is none: ``tq_queue_claim`` covers columns a claim does not
    change, so on PostgreSQL a claim, a renewal and a release are HOT updates (the table keeps
    30 % of each page free for them: ``fillfactor = 70``, migration 0016). ``lease_owner`` has no
    index for that reason; releasing a dead process's leases (rare) scans the table.
    """

    id = models.BigAutoField(primary_key=True)
    queue = models.CharField(_("queue"), max_length=200)
    priority = models.SmallIntegerField(_("priority"), default=0)
    payload = models.TextField(_("payload"))
    not_before = models.DateTimeField(_("not before"))
    lease_owner = models.CharField(_("lease owner"), max_length=255, null=True, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    delivery_count = models.PositiveIntegerField(_("deliveries"), default=0)
    created_at = models.DateTimeField(_("created"))

    class Meta:
        verbose_name = _("queued message")
        verbose_name_plural = _("queued messages")
        indexes = [
            models.Index(fields=["queue", "-priority", "id"], name="tq_queue_claim"),
        ]

    def __str__(self) -> str:
        return f"{self.queue}#{self.id}"
