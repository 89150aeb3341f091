"""``GroupResult`` (the members of a group) and ``ChordCounter`` (how many of a chord's are left)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class GroupResult(models.Model):
    """A group of tasks applied together: its id and its members' task ids, in order."""

    group_id = models.CharField(_("group id"), max_length=255, unique=True)
    result_ids = models.JSONField(_("member task ids"), default=list)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
    )
    parent_id = models.CharField(_("parent id"), max_length=255, null=True, blank=True)
    root_id = models.CharField(_("root id"), max_length=255, null=True, blank=True, db_index=True)
    is_chord = models.BooleanField(_("chord header"), default=False)
    date_created = models.DateTimeField(_("created"), auto_now_add=True)
    date_done = models.DateTimeField(_("done"), null=True, blank=True)

    class Meta:
        verbose_name = _("group result")
        verbose_name_plural = _("group results")
        ordering = ["-date_created", "-id"]
        indexes = [
            models.Index(fields=["-date_created", "-id"], name="tq_group_created"),
            models.Index(fields=["owner", "-date_created"], name="tq_group_owner_created"),
        ]

    def __str__(self) -> str:
        return self.group_id


class ChordCounter(models.Model):
    """The header tasks of a chord still to finish; the one that brings it to zero sends the body.

    Each header task decrements ``remaining`` in the transaction that stores its result, so the
    count is exact whatever dies when; the first failing header task sets ``state`` to FAILURE.
    """

    PENDING = "PENDING"
    SUCCESS = "SUCCESS"  #: the body was sent
    FAILURE = "FAILURE"  #: a header task failed: the body never runs

    group_id = models.CharField(_("group id"), max_length=255, unique=True)
    remaining = models.IntegerField(_("remaining"))
    total = models.PositiveIntegerField(_("header tasks"))
    result_ids = models.JSONField(_("header task ids"), default=list)
    body = models.JSONField(_("body signature"))
    state = models.CharField(_("state"), max_length=20, default=PENDING)
    date_created = models.DateTimeField(_("created"), auto_now_add=True)
    date_done = models.DateTimeField(_("done"), null=True, blank=True)

    class Meta:
        verbose_name = _("chord counter")
        verbose_name_plural = _("chord counters")
        ordering = ["-date_created"]

    def __str__(self) -> str:
        return f"{self.group_id} ({self.remaining}/{self.total} left)"
