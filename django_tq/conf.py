"""One settings object for django_tq: the ``TQ`` dict, read with defaults and validated.

Like Django REST framework's ``api_settings``: nothing reads ``django.conf.settings`` at import
time, values are resolved on first access, and the cache is dropped on ``setting_changed`` (the
receiver is connected in ``apps.py``) so tests can use ``override_settings(TQ=...)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from django_tq.exchanges import EXCHANGE_TYPES, parse_topology

MiB = 1024 * 1024

DEFAULTS: dict[str, Any] = {
    "BROKER_URL": "django://",
    "BROKER_TRANSPORT_OPTIONS": {},
    "BROKER_CONNECTION_TIMEOUT": 4.0,
    #: seconds: RabbitMQ drops a consumer's connection that stays silent this long (0: never)
    "BROKER_HEARTBEAT": 60.0,
    "BROKER_USE_SSL": None,
    #: RabbitMQ: "wait" (a publish returns once confirmed) or "batch" (once written)
    "BROKER_CONFIRM": "wait",
    "RESULT_BACKEND": "django-db",
    "RESULT_EXPIRES": timedelta(days=7),
    "TRACK_ENQUEUED": True,
    "TRACK_STARTED": True,
    "PUBLISH_ON_COMMIT": True,
    "DEFAULT_QUEUE": "default",
    "IMPORTS": [],
    "TASK_ROUTES": {},
    "QUEUES": None,  # None: no declared queues; every queue is direct, created when first used
    "DEFAULT_EXCHANGE": None,  # None: DEFAULT_QUEUE's name, as in Celery
    "DEFAULT_EXCHANGE_TYPE": "direct",
    "DEFAULT_ROUTING_KEY": None,  # None: DEFAULT_QUEUE's binding key
    "CREATE_MISSING_QUEUES": True,
    "TASK_SERIALIZER": "json",
    "TASK_COMPRESSION": None,
    "ACCEPT_CONTENT": ["json"],
    "SIGNING": False,
    "ACCEPT_CELERY": False,
    "MAX_PAYLOAD_BYTES": MiB,
    "ACKS_LATE": True,
    "MAX_DELIVERIES": 4,
    "REJECT_ON_WORKER_LOST": True,
    "TASK_TIME_LIMIT": None,
    "TASK_SOFT_TIME_LIMIT": None,
    "DEFAULT_RETRY_DELAY": 180,
    "MAX_RETRIES": 3,
    "UNIQUE_TTL": 3600,
    "WORKER_CONCURRENCY": None,  # None: number of CPUs
    "WORKER_POOL": "prefork",
    "WORKER_QUEUES": None,  # None: [DEFAULT_QUEUE]; what tqworker consumes without -Q
    "WORKER_PREFETCH_MULTIPLIER": 4,
    "WORKER_MAX_TASKS_PER_CHILD": None,
    "WORKER_MAX_MEMORY_PER_CHILD": None,
    "WORKER_AUTOSCALE_KEEPALIVE": 30,  # seconds a consumer may idle before --autoscale stops it
    "WORKER_DB_CONN_MAX_AGE": 300,
    "LEASE_SECONDS": 60,
    "ETA_HORIZON_SECONDS": 30,
    "BEAT_SCHEDULE": {},
    "BEAT_MAX_LOOP_INTERVAL": 5,
    "TIMEZONE": None,  # None: Django's TIME_ZONE
    "ALWAYS_EAGER": False,
    "EAGER_PROPAGATES": True,
    "API_PERMISSION_CLASSES": ["django_tq.api.permissions.IsStaffOrOwner"],
    "API_ENQUEUE_ALLOWLIST": [],
    "OUTBOX": False,
    "SEND_EVENTS": False,  # workers emit live task events (``tqworker -E``)
    "CONTROL_EXCHANGE": "django_tq",  # the prefix of remote control's and events' channels
    "METRICS_PORT": None,  # None: no worker metrics endpoint unless tqworker --metrics-port
    "METRICS_ADDRESS": "0.0.0.0",
    "METRICS_TOKEN": None,
    "OTEL": False,
}

POOLS = ("prefork", "threads", "solo")


def _number(minimum: float, *, allow_none: bool = False) -> Callable[[str, Any], None]:
    def check(key: str, value: Any) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise ImproperlyConfigured(f"TQ[{key!r}] must be a number >= {minimum}, got {value!r}.")

    return check


def _one_of(*choices: str) -> Callable[[str, Any], None]:
    def check(key: str, value: Any) -> None:
        if value not in choices:
            raise ImproperlyConfigured(f"TQ[{key!r}] must be one of {choices}, got {value!r}.")

    return check


def _of_type(*types: type, allow_none: bool = False) -> Callable[[str, Any], None]:
    def check(key: str, value: Any) -> None:
        if value is None and allow_none:
            return
        if not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise ImproperlyConfigured(f"TQ[{key!r}] must be a {names}, got {value!r}.")

    return check


def _result_backend(key: str, value: Any) -> None:
    if value is None or value in ("django-db", "django-cache"):
        return
    if isinstance(value, str) and value.startswith("django-cache://") and value[15:]:
        return
    raise ImproperlyConfigured(
        f'TQ[{key!r}] must be "django-db", "django-cache", "django-cache://<alias>" or None, '
        f"got {value!r}."
    )


def _routes(key: str, value: Any) -> None:
    if not (isinstance(value, Mapping) or callable(value) or isinstance(value, list | tuple)):
        raise ImproperlyConfigured(
            f"TQ[{key!r}] must be a dict of pattern -> options, a callable router, or a list of them."
        )


VALIDATORS: dict[str, Callable[[str, Any], None]] = {
    "BROKER_URL": _of_type(str),
    "BROKER_TRANSPORT_OPTIONS": _of_type(dict),
    "BROKER_CONNECTION_TIMEOUT": _number(0.1),
    "BROKER_HEARTBEAT": _number(0),
    "BROKER_USE_SSL": _of_type(bool, dict, allow_none=True),
    "BROKER_CONFIRM": _one_of("wait", "batch"),
    "RESULT_BACKEND": _result_backend,
    "RESULT_EXPIRES": _of_type(timedelta, int, float, allow_none=True),
    "TRACK_ENQUEUED": _of_type(bool),
    "TRACK_STARTED": _of_type(bool),
    "PUBLISH_ON_COMMIT": _of_type(bool),
    "DEFAULT_QUEUE": _of_type(str),
    "IMPORTS": _of_type(list, tuple),
    "TASK_ROUTES": _routes,
    "QUEUES": _of_type(dict, list, tuple, allow_none=True),  # entries: exchanges.parse_topology
    "DEFAULT_EXCHANGE": _of_type(str, allow_none=True),
    "DEFAULT_EXCHANGE_TYPE": _one_of(*EXCHANGE_TYPES),
    "DEFAULT_ROUTING_KEY": _of_type(str, allow_none=True),
    "CREATE_MISSING_QUEUES": _of_type(bool),
    "TASK_SERIALIZER": _one_of("json", "pickle"),
    "TASK_COMPRESSION": _of_type(str, allow_none=True),
    "ACCEPT_CONTENT": _of_type(list, tuple),
    "SIGNING": _of_type(bool),
    "ACCEPT_CELERY": _of_type(bool),
    "MAX_PAYLOAD_BYTES": _number(1024),
    "ACKS_LATE": _of_type(bool),
    "MAX_DELIVERIES": _number(1),
    "REJECT_ON_WORKER_LOST": _of_type(bool),
    "TASK_TIME_LIMIT": _number(0, allow_none=True),
    "TASK_SOFT_TIME_LIMIT": _number(0, allow_none=True),
    "DEFAULT_RETRY_DELAY": _number(0),
    "MAX_RETRIES": _number(0, allow_none=True),
    "UNIQUE_TTL": _number(1),
    "WORKER_CONCURRENCY": _number(1, allow_none=True),
    "WORKER_POOL": _one_of(*POOLS),
    "WORKER_QUEUES": _of_type(list, tuple, allow_none=True),
    "WORKER_PREFETCH_MULTIPLIER": _number(1),
    "WORKER_MAX_TASKS_PER_CHILD": _number(1, allow_none=True),
    "WORKER_MAX_MEMORY_PER_CHILD": _number(1, allow_none=True),
    "WORKER_AUTOSCALE_KEEPALIVE": _number(0),
    "WORKER_DB_CONN_MAX_AGE": _number(0, allow_none=True),
    "LEASE_SECONDS": _number(1),
    "ETA_HORIZON_SECONDS": _number(0),
    "BEAT_SCHEDULE": _of_type(dict),
    "BEAT_MAX_LOOP_INTERVAL": _number(0.1),
    "TIMEZONE": _of_type(str, allow_none=True),
    "ALWAYS_EAGER": _of_type(bool),
    "EAGER_PROPAGATES": _of_type(bool),
    "API_PERMISSION_CLASSES": _of_type(list, tuple),
    "API_ENQUEUE_ALLOWLIST": _of_type(list, tuple),
    "OUTBOX": _of_type(bool),
    "SEND_EVENTS": _of_type(bool),
    "CONTROL_EXCHANGE": _of_type(str),
    "METRICS_PORT": _number(0, allow_none=True),
    "METRICS_ADDRESS": _of_type(str),
    "METRICS_TOKEN": _of_type(str, allow_none=True),
    "OTEL": _of_type(bool),
}


class TQSettings:
    """The ``TQ`` settings dict with defaults, validated on first access.

    Attribute access (``tq_settings.BROKER_URL``) returns the user's value or the default. An
    unknown key in ``TQ`` raises ``ImproperlyConfigured`` naming it, as does a bad value.
    """

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        from django.conf import settings

        user = getattr(settings, "TQ", {}) or {}
        if not isinstance(user, Mapping):
            raise ImproperlyConfigured("The TQ setting must be a dict.")
        unknown = sorted(set(user) - set(DEFAULTS))
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown key(s) in the TQ setting: {', '.join(unknown)}. "
                f"Valid keys: {', '.join(sorted(DEFAULTS))}."
            )
        values = {**DEFAULTS, **user}
        for key, value in values.items():
            VALIDATORS[key](key, value)
        if values["WORKER_CONCURRENCY"] is None:
            values["WORKER_CONCURRENCY"] = os.cpu_count() or 1
        if values["TIMEZONE"] is None:
            values["TIMEZONE"] = settings.TIME_ZONE or "UTC"
        values["DEFAULT_EXCHANGE"] = values["DEFAULT_EXCHANGE"] or values["DEFAULT_QUEUE"]
        values["QUEUES"] = parse_topology(
            "QUEUES",
            values["QUEUES"],
            default_exchange=values["DEFAULT_EXCHANGE"],
            default_exchange_type=values["DEFAULT_EXCHANGE_TYPE"],
        )
        if (
            values["QUEUES"].queues
            and not values["CREATE_MISSING_QUEUES"]
            and values["QUEUES"].get(values["DEFAULT_QUEUE"]) is None
        ):
            raise ImproperlyConfigured(
                f"TQ['DEFAULT_QUEUE'] {values['DEFAULT_QUEUE']!r} is not in TQ['QUEUES'] and "
                "TQ['CREATE_MISSING_QUEUES'] is False: declare it, or allow missing queues."
            )
        if isinstance(values["RESULT_EXPIRES"], int | float):
            values["RESULT_EXPIRES"] = timedelta(seconds=values["RESULT_EXPIRES"])
        return values

    def __getattr__(self, key: str) -> Any:
        # Only reached for a key not cached as an attribute yet: after the first access every
        # value is a plain instance attribute (a publish reads a dozen of them; a call through
        # ``__getattr__`` each cost more than the rest of the lookup).
        if key.startswith("_") or key not in DEFAULTS:
            raise AttributeError(f"Invalid django_tq setting: {key!r}")
        if self._values is None:
            self._cache(self._load())
        assert self._values is not None
        return self._values[key]

    def _cache(self, values: dict[str, Any]) -> None:
        self._forget()
        self._values = values
        self.__dict__.update(values)

    def _forget(self) -> None:
        for key in DEFAULTS:
            self.__dict__.pop(key, None)
        self._values = None

    def check(self) -> None:
        """Load and validate every key now (raises ``ImproperlyConfigured``)."""
        self._cache(self._load())

    def reload(self) -> None:
        """Forget cached values; the next access reads ``settings.TQ`` again."""
        self._forget()
        for hook in _reload_hooks:
            hook()


_reload_hooks: list[Callable[[], None]] = []


def on_reload(hook: Callable[[], None]) -> Callable[[], None]:
    """Register ``hook`` to run when the settings are reloaded (drop caches derived from them)."""
    _reload_hooks.append(hook)
    return hook


def reload_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver: reload when ``TQ`` (or a setting it derives from) changes."""
    if setting in ("TQ", "TIME_ZONE", "SECRET_KEY", "CACHES", "DATABASES"):
        tq_settings.reload()


tq_settings = TQSettings()
