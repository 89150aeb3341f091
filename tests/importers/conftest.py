"""django-celery-beat and django-celery-results for the import tests, without installing them.

They are not in the test settings' ``INSTALLED_APPS``: their migrations would run in every test
database and their import (Celery's) would slow every worker subprocess down. Instead their
tables are created once per session from their own models, and ``celery_apps`` installs the two
apps for the duration of a test (their rows are made through their own models then). Outside it
the apps are not installed and their tables are still there: the importers' plain SQL path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connections
from django.test.utils import override_settings

CELERY_APPS = ["django_celery_beat", "django_celery_results"]
T = TypeVar("T")


def installed_apps() -> list[str]:
    """The test settings' apps without the admin (theirs would register for the whole session)
    and with the two Celery ones."""
    return [app for app in settings.INSTALLED_APPS if app != "django.contrib.admin"] + CELERY_APPS


def celery_models() -> list[Any]:
    """Their models, in an order their foreign keys can be created in."""
    return [model for label in CELERY_APPS for model in apps.get_app_config(label).get_models()]


@pytest.fixture(scope="session")
def celery_tables(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """Create django-celery-beat's and django-celery-results' tables in the test database."""
    with django_db_blocker.unblock(), override_settings(INSTALLED_APPS=installed_apps()):
        models = celery_models()
        connection = connections["default"]
        existing = set(connection.introspection.table_names())
        with connection.schema_editor() as editor:
            for model in models:
                if model._meta.db_table not in existing:
                    editor.create_model(model)
    yield
    with (
        django_db_blocker.unblock(),
        override_settings(INSTALLED_APPS=installed_apps()),
        connections["default"].schema_editor() as editor,
    ):
        for model in reversed(celery_models()):
            editor.delete_model(model)


def celery_model(app_label: str, name: str) -> Any:
    """Return a model of one of the two apps (usable whether or not they are installed now)."""
    return apps.all_models[app_label][name.lower()]


@pytest.fixture
def celery_apps(celery_tables: None, db: None) -> Callable[[], Any]:
    """Return ``installed()``: a context in which the two Celery apps are installed."""
    return lambda: override_settings(INSTALLED_APPS=installed_apps())


@pytest.fixture(params=["models", "sql"])
def read_via(request: pytest.FixtureRequest, celery_apps: Callable[[], Any]) -> Callable[..., Any]:
    """Return ``run(function)``: call it with the Celery apps installed (the importers read
    through their models) or not (plain SQL on their tables), once each."""

    def run(function: Callable[[], T]) -> T:
        if request.param == "models":
            with celery_apps():
                return function()
        assert not apps.is_installed("django_celery_beat")
        return function()

    return run
