"""System checks (``tq.E…`` errors, ``tq.W…`` warnings) for django_tq's configuration."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from django_tq.conf import tq_settings
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
        from urllib.parse import parse_qsl

        alias = dict(parse_qsl(urlsplit(url).query)).get("alias", "default")
        if alias not in settings.DATABASES:
            messages.append(
                checks.Error(
                    f"TQ['BROKER_URL'] uses database alias {alias!r}, which is not in DATABASES.",
                    id="tq.E004",
                )
            )
    return messages
