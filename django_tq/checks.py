"""System checks (``tq.E…`` errors, ``tq.W…`` warnings) for django_tq's configuration."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import router

from django_tq import sqlite
from django_tq.conf import tq_settings
from django_tq.models import TaskResult
from django_tq.transport import TRANSPORTS


@checks.register("django_tq")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Validate ``TQ`` and the combinations of settings that cannot work."""
    try:
        tq_settings.check()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="tq.E001")]
    messages: list[checks.CheckMessage] = []
    url = tq_settings.BROKER_URL
    scheme = urlsplit(url).scheme
    if scheme not in TRANSPORTS:
        messages.append(
            checks.Error(
                f"TQ['BROKER_URL'] has an unknown scheme {scheme!r}.",
                hint=f"Use one of: {', '.join(sorted(TRANSPORTS))}.",
                id="tq.E002",
            )
        )
    accepted = set(tq_settings.ACCEPT_CONTENT) | {tq_settings.TASK_SERIALIZER}
    if "pickle" in accepted or "application/x-python-serialize" in accepted:
        messages.append(
            checks.Warning(
                "django_tq accepts pickle: a message from anyone who can write to the broker can run "
                "arbitrary code in your workers.",
                hint="Use the JSON serializer (the default), or turn on TQ['SIGNING'].",
                id="tq.W001",
            )
        )
    backend = tq_settings.RESULT_BACKEND
    if isinstance(backend, str) and backend.startswith("django-cache"):
        alias = backend.removeprefix("django-cache://") if "://" in backend else "default"
        if alias not in settings.CACHES:
            messages.append(
                checks.Error(
                    f"TQ['RESULT_BACKEND'] names cache {alias!r}, which is not in CACHES.",
                    id="tq.E003",
                )
            )
    if scheme == "django":
        alias = dict(parse_qsl(urlsplit(url).query)).get("alias", "default")
        if alias not in settings.DATABASES:
            messages.append(
                checks.Error(
                    f"TQ['BROKER_URL'] uses database alias {alias!r}, which is not in DATABASES.",
                    id="tq.E004",
                )
            )
    messages.extend(check_sqlite(scheme, backend))
    return messages


def check_sqlite(scheme: str, backend: Any) -> list[checks.CheckMessage]:
    """Warn (``tq.W002``) when the queue or the results live in SQLite without the ``OPTIONS``
    several writing processes need, and give the ``OPTIONS`` to paste."""
    uses: dict[str, list[str]] = {}
    if scheme == "django":
        alias = dict(parse_qsl(urlsplit(tq_settings.BROKER_URL).query)).get("alias", "default")
        uses.setdefault(alias, []).append("the django:// queue")
    if backend == "django-db":
        uses.setdefault(router.db_for_write(TaskResult) or "default", []).append("results")
    messages: list[checks.CheckMessage] = []
    for alias, what in uses.items():
        settings_dict = settings.DATABASES.get(alias)
        if settings_dict is None or not sqlite.is_shared_file(settings_dict):
            continue
        missing = sqlite.missing_options(settings_dict)
        if not missing:
            continue
        options = sqlite.recommended_options(settings_dict)
        messages.append(
            checks.Warning(
                f"DATABASES[{alias!r}] is SQLite and holds {' and '.join(what)}, but its OPTIONS "
                f"lack {' and '.join(repr(key) for key in missing)}: when a web process, a worker "
                "and beat write at once, the web process's writes can fail with \"database is "
                "locked\" (django_tq's own processes set a busy timeout and WAL by themselves).",
                hint=f"Set DATABASES[{alias!r}]['OPTIONS'] = {options!r}",
                id="tq.W002",
            )
        )
    return messages
