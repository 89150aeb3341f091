"""django_tq's admin screens, one module per concern (imported here so they register).

Django's admin autodiscovery imports ``django_tq.admin``; importing this package registers the
dashboard and the task results, group results, dead letters, revocations, parked messages,
periodic tasks, workers, queued messages, outbox messages, unique locks and rate-limit buckets
screens with the default admin site.
"""

from django_tq.admin import (
    dashboard,
    dead_letters,
    groups,
    limits,
    outbox,
    parking,
    queue,
    results,
    revocations,
    schedules,
    workers,
)

__all__ = [
    "dashboard",
    "dead_letters",
    "groups",
    "limits",
    "outbox",
    "parking",
    "queue",
    "results",
    "revocations",
    "schedules",
    "workers",
]
