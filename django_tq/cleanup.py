"""Result expiry: delete what is older than ``TQ["RESULT_EXPIRES"]`` (or a given age).

One function for the worker's periodic housekeeping and ``manage.py tqcleanup``: finished
results (a batch per statement, oldest first, so a large backlog never holds a long lock),
revocations and queue-depth samples older than the same age, and expired remote-control
commands.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.utils import timezone

from django_tq import mailbox
from django_tq.conf import tq_settings
from django_tq.models import QueueDepthSample, Revocation
from django_tq.result_backends import get_backend

logger = logging.getLogger("django_tq.cleanup")


@dataclass(frozen=True, kw_only=True)
class Expired:
    """What one cleanup deleted."""

    results: int = 0
    revocations: int = 0
    samples: int = 0
    commands: int = 0  #: remote-control commands expired over a minute ago


def expire(
    older_than: dt.timedelta | None = None,
    *,
    batches: int | None = 10,
    now: dt.datetime | None = None,
) -> Expired:
    """Delete results finished more than ``older_than`` ago (default ``RESULT_EXPIRES``).

    ``batches`` caps the statements per call (the worker's share per minute); ``None`` deletes
    everything expired. With ``older_than`` and ``RESULT_EXPIRES`` both ``None`` nothing expires.
    """
    commands = mailbox.delete_expired(now)
    age = older_than if older_than is not None else tq_settings.RESULT_EXPIRES
    if age is None:
        return Expired(commands=commands)
    before = (now or timezone.now()) - age
    revocations, _ = Revocation.objects.filter(created_at__lt=before).delete()
    samples, _ = QueueDepthSample.objects.older_than(before).delete()
    backend = get_backend()
    results = 0
    done = 0
    while batches is None or done < batches:
        deleted = backend.cleanup(before)
        results += deleted
        done += 1
        if not deleted:
            break
    if results:
        logger.info("Deleted %d expired result(s)", results)
    return Expired(results=results, revocations=revocations, samples=samples, commands=commands)
