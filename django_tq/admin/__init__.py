"""django_tq's admin screens, one module per concern (imported here so they register).

Django's admin autodiscovery imports ``django_tq.admin``; importing this package registers the
task results, dead letters, workers, queued messages, unique locks and rate-limit buckets screens with the default admin site.
"""

from django_tq.admin import dead_letters, limits, queue, results, schedules, workers

__all__ = ["dead_letters", "limits", "queue", "results", "schedules", "workers"]
