"""django_tq as a backend of Django's ``django.tasks`` (Django 6, or the backport on Django 5.2).

    TASKS = {"default": {"BACKEND": "django_tq.backends.TQTaskBackend"}}

Importing this package imports ``django.tasks`` (or ``django_tasks``); the rest of django_tq
never does.
"""

from django_tq.backends.backend import TQTaskBackend

__all__ = ["TQTaskBackend"]
