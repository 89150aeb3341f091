"""``RateLimitBucket``: the shared token bucket of a task with a global ``rate_limit``."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class RateLimitBucket(models.Model):
    """One task's tokens, shared by every worker (``rate_limit_scope="global"``, the default).

    ``tokens`` may be negative: each worker reserves the next free slot and holds its message
    until then, so ``-tokens`` is the number of slots already promised to held messages.
    """

    name = models.CharField(_("name"), max_length=255, unique=True)
    tokens = models.FloatField(_("tokens"))
    updated_at = models.DateTimeField(_("updated at"))

    class Meta:
        verbose_name = _("rate limit bucket")
        verbose_name_plural = _("rate limit buckets")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
