"""django_tq's admin screens, one module per concern (imported here so they register).

Django's admin autodiscovery imports ``django_tq.admin``; importing this package registers the
dashboard and the task results, dead letters, workers, queued messages and schedules screens with
the default admin site.
"""

from django_tq.admin import dashboard, dead_letters, queue, results, schedules, workers

__all__ = ["dashboard", "dead_letters", "queue", "results", "schedules", "workers"]
