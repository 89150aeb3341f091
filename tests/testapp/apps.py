import os

from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tests.testapp import signal_log

        if os.environ.get(signal_log.ENV):  # a worker subprocess of a signal test
            signal_log.connect()
