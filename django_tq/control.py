"""Reaching running workers: revocation (and, later, inspection), for results, admin, REST, commands.

Revocations are rows in the database: a worker loads them at start and re-reads new ones every
second, so a revocation reaches every worker on every transport, including workers started
after it, and survives restarts.
"""

from __future__ import annotations

import signal as signals_module

from django.db import router

from django_tq import signals, states
from django_tq.models import Revocation
from django_tq.result_backends import get_backend

#: states in which a revoked task has not started: it is marked REVOKED at once
NOT_STARTED = frozenset({states.PENDING, states.QUEUED, states.RETRY})


def revoke(task_id: str, *, terminate: bool = False, signal: str = "SIGTERM") -> None:
    """Revoke ``task_id``: it will not run; with ``terminate`` a running one is killed (prefork).

    Without ``terminate`` a task that is already running finishes, as in Celery.
    """
    if not hasattr(signals_module, signal):
        raise ValueError(f"Unknown signal {signal!r}")
    alias = router.db_for_write(Revocation) or "default"
    Revocation.objects.using(alias).update_or_create(
        task_id=task_id, defaults={"terminate": terminate, "signal": signal}
    )
    backend = get_backend()
    data = backend.get(task_id)
    if data is None or data.state in NOT_STARTED:
        backend.set_state(task_id, states.REVOKED, result={"reason": "revoked"})
    signals.send(
        signals.task_revoked, sender=None, task_id=task_id, terminated=False, expired=False
    )


def revoked_since(since: object | None = None) -> list[tuple[str, bool, str]]:
    """Return ``(task_id, terminate, signal)`` of revocations created since ``since`` (all if None)."""
    rows = Revocation.objects.all()
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    return list(rows.values_list("task_id", "terminate", "signal"))
