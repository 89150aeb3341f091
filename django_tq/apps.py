"""The Django app: autodiscovers every installed app's ``tasks.py``, wires settings reloads, and
registers django_tq's transports with kombu (so ``kombu.Connection("django://")`` works)."""

from __future__ import annotations

from importlib import import_module

from django.apps import AppConfig
from django.core.signals import setting_changed
from django.urls import register_converter
from django.urls.converters import get_converters
from django.utils.module_loading import autodiscover_modules
from django.utils.translation import gettext_lazy as _

from django_tq.conf import reload_on_setting_changed, tq_settings
from django_tq.converters import NAME, TaskIdConverter
from django_tq.tracing import install as install_tracing
from django_tq.transport import register_with_kombu


class DjangoTQConfig(AppConfig):
    """django_tq's app config."""

    name = "django_tq"
    label = "django_tq"
    verbose_name = _("Task queue")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Both import the models: Django allows that once the apps are loaded, that is, here.
        # import-inside: app loading: registers the system checks
        from django_tq import checks  # noqa: F401

        # import-inside: app loading: declares the built-in tasks map, starmap and accumulate
        from django_tq.canvas import builtins  # noqa: F401

        if NAME not in get_converters():
            register_converter(TaskIdConverter, NAME)

        register_with_kombu()
        setting_changed.connect(reload_on_setting_changed, dispatch_uid="django_tq.conf.reload")
        autodiscover_modules("tasks")
        for module in tq_settings.IMPORTS:
            import_module(module)
        install_tracing()  # TQ["OTEL"]: connects the tracing receivers
