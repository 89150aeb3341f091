import os

from django.apps import AppConfig


class DjangoTasksTestConfig(AppConfig):
    """Tasks declared with django.tasks (Django 6) or the django_tasks backport (Django 5.2)."""

    name = "tests.djangotasks"
    label = "djangotasks"

    def ready(self) -> None:
        from tests.djangotasks import signal_log

        if os.environ.get(signal_log.ENV):  # a worker subprocess of a signal test
            signal_log.connect()
