"""``ControlCommand`` and ``ControlReply``: remote control of running workers on ``django://``.

A command (``ping``, ``active``, ``pool_grow`` …) is a row every worker's parent reads within a
tick; each worker it is meant for answers with a reply row. Commands expire (``expires_at``) and
the worker's cleanup deletes them with their replies.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class ControlCommand(models.Model):
    """One command broadcast to all workers, or to the ones named in ``destination``."""

    id = models.BigAutoField(primary_key=True)
    command_id = models.CharField(_("command id"), max_length=64, unique=True)
    name = models.CharField(_("command"), max_length=64)
    arguments = models.JSONField(_("arguments"), default=dict)
    #: worker names, or null for every worker
    destination = models.JSONField(_("destination"), null=True, blank=True)
    sender = models.CharField(_("sender"), max_length=255, blank=True, default="")
    signature = models.CharField(_("signature"), max_length=100, blank=True, default="")
    created_at = models.DateTimeField(_("sent"))
    expires_at = models.DateTimeField(_("expires"), db_index=True)

    class Meta:
        verbose_name = _("control command")
        verbose_name_plural = _("control commands")
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.name} [{self.command_id}]"


class ControlReply(models.Model):
    """What one worker answered to one command."""

    command = models.ForeignKey(
        ControlCommand, on_delete=models.CASCADE, related_name="replies", verbose_name=_("command")
    )
    hostname = models.CharField(_("worker"), max_length=255)
    payload = models.JSONField(_("reply"))
    created_at = models.DateTimeField(_("answered"), auto_now_add=True)

    class Meta:
        verbose_name = _("control reply")
        verbose_name_plural = _("control replies")
        ordering = ["hostname"]
        constraints = [
            models.UniqueConstraint(fields=["command", "hostname"], name="tq_control_reply_once")
        ]

    def __str__(self) -> str:
        return f"{self.hostname}: {self.command_id}"
