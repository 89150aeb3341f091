"""System checks (``tq.E…`` errors, ``tq.W…`` warnings) for django_tq's configuration.

Every id is in the table of docs/checks.md. ``check_settings`` runs with every ``manage.py``
command; ``check_deployment`` only with ``check --deploy``; ``check_database`` only when the
checks may use the databases (``migrate``, ``check --database default``): it reads every
migration file, which costs too much for every command. ``tq.E005`` is checked
by ``TQTaskBackend.check()`` (``django_tq/backends/backend.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router

from django_tq import sqlite
from django_tq.broker import AMQP_SCHEMES
from django_tq.conf import tq_settings
from django_tq.models import TaskResult
from django_tq.queue_names import routed_queues, worker_queues
from django_tq.registry import registry
from django_tq.transport import TRANSPORTS

#: cache backends whose data stays in the process that wrote it (or is never kept)
PROCESS_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


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
                    hint=f"Add {alias!r} to CACHES, or name one of: {', '.join(settings.CACHES)}.",
                    id="tq.E003",
                )
            )
        elif _cache_backend(alias) in PROCESS_LOCAL_CACHES:
            kind = _cache_backend(alias).rpartition(".")[2]
            messages.append(
                checks.Warning(
                    f"TQ['RESULT_BACKEND'] keeps results in cache {alias!r}, a {kind}: each "
                    "process has its own (or none), so what a worker stores is never seen by the "
                    "web process or another worker.",
                    hint="Use a shared cache (django-redis, Memcached, the database cache) or "
                    'RESULT_BACKEND "django-db".',
                    id="tq.W006",
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
    messages.extend(check_time_limits())
    messages.extend(check_batch_confirms(scheme))
    return messages


def check_batch_confirms(scheme: str) -> list[checks.CheckMessage]:
    """Warn (``tq.W009``) when ``BROKER_CONFIRM = "batch"`` has no effect: only RabbitMQ's
    publisher confirms can be read late, and the broker ignores the setting silently otherwise
    (``Broker.confirms_late``), so a user who set it for speed would never learn why."""
    if tq_settings.BROKER_CONFIRM != "batch":
        return []
    if scheme not in AMQP_SCHEMES:
        why = f"the broker is not RabbitMQ ({scheme}://)"
        hint = 'Remove BROKER_CONFIRM (its default, "wait", is what this broker does).'
    elif not tq_settings.BROKER_TRANSPORT_OPTIONS.get("confirm_publish", True):
        why = "BROKER_TRANSPORT_OPTIONS turns publisher confirms off (confirm_publish=False)"
        hint = "Remove confirm_publish=False to have late confirms, or remove BROKER_CONFIRM."
    else:
        return []
    return [
        checks.Warning(
            f'TQ["BROKER_CONFIRM"] is "batch" but {why}: it is ignored, and a publish '
            "returns as it would without it.",
            hint=hint,
            id="tq.W009",
        )
    ]


def _queue_alias() -> str | None:
    """Return the database alias of the ``django://`` queue, or None for another broker."""
    url = tq_settings.BROKER_URL
    if urlsplit(url).scheme != "django":
        return None
    return dict(parse_qsl(urlsplit(url).query)).get("alias", "default")


def check_time_limits() -> list[checks.CheckMessage]:
    """Warn (``tq.W005``) when time limits are set that ``WORKER_POOL`` does not enforce: none
    on ``threads``, the hard one on ``solo``."""
    pool = tq_settings.WORKER_POOL
    if pool == "prefork":
        return []
    kinds = ("time_limit", "soft_time_limit") if pool == "threads" else ("time_limit",)
    where = []
    for kind in kinds:
        if getattr(tq_settings, f"TASK_{kind.upper()}"):
            where.append(f"TQ['TASK_{kind.upper()}']")
        where.extend(f"{name} ({kind})" for name, task in registry.items() if getattr(task, kind))
    if not where:
        return []
    shown = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
    enforces = "no time limit" if pool == "threads" else "no hard time limit"
    return [
        checks.Warning(
            f"TQ['WORKER_POOL'] is {pool!r}, which enforces {enforces}, but some are set: "
            f"{shown}. A task past its limit goes on running.",
            hint='Use WORKER_POOL "prefork" (hard and soft limits) or "solo" (soft limits), '
            "or poll self.is_aborted() in long tasks.",
            id="tq.W005",
        )
    ]


@checks.register("django_tq", deploy=True)
def check_deployment(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn about settings that work in development but not in production (``--deploy``)."""
    try:
        tq_settings.check()
    except ImproperlyConfigured:
        return []  # check_settings reports it (tq.E001)
    messages: list[checks.CheckMessage] = []
    alias = _queue_alias()
    concurrency = tq_settings.WORKER_CONCURRENCY
    engine = str(settings.DATABASES.get(alias or "", {}).get("ENGINE", ""))
    if engine.endswith("sqlite3") and tq_settings.WORKER_POOL == "prefork" and concurrency > 1:
        messages.append(
            checks.Warning(
                f"The django:// queue is in SQLite (DATABASES[{alias!r}]), which has no row "
                f"locks, and tqworker starts {concurrency} consuming processes "
                "(WORKER_POOL 'prefork', WORKER_CONCURRENCY): they take turns on the file's one "
                "write lock, and SQLite's locking does not hold across hosts (network file "
                "systems). This check reads the settings: it cannot see -c/-P on a command line "
                "or how many tqworker processes you start.",
                hint="For production put the queue in PostgreSQL (or MySQL 8 / MariaDB 10.6) or "
                "use Redis or RabbitMQ; on SQLite run one tqworker on one host.",
                id="tq.W004",
            )
        )
    consumed = set(worker_queues())
    for queue, sources in sorted(routed_queues().items()):
        if queue in consumed:
            continue
        messages.append(
            checks.Warning(
                f"Tasks are routed to queue {queue!r} ({', '.join(sources[:3])}), which "
                f"TQ['WORKER_QUEUES'] ({', '.join(sorted(consumed))}) does not list: a tqworker "
                "started without -Q never consumes it.",
                hint=f"Add {queue!r} to TQ['WORKER_QUEUES'], the queues your workers consume, "
                f"and start them without -Q (or with -Q listing {queue!r}).",
                id="tq.W007",
            )
        )
    if settings.DEBUG:
        messages.append(
            checks.Warning(
                "DEBUG is True: a tqworker keeps every SQL query its tasks run in memory "
                "(connection.queries, up to 9000 a connection), so it grows with every task.",
                hint="Set DEBUG = False in the settings tqworker runs with.",
                id="tq.W008",
            )
        )
    return messages


@checks.register(checks.Tags.database)
def check_database(
    app_configs: Any = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Checks that read the migration files or a database: tagged ``database`` only, so they run
    when the databases are asked for (``migrate``, ``check --database default``), not with every
    command (on Django 5.2 ``databases`` is None then; Django 6 leaves the check out)."""
    if not databases:
        return []
    messages = check_migrations_match_models()
    alias = _queue_alias()
    if alias is not None and alias in databases and _lacks_skip_locked(alias):
        messages.append(
            checks.Warning(
                f"The django:// queue is in DATABASES[{alias!r}], a MySQL/MariaDB without "
                "SKIP LOCKED: consumers wait on each other's row locks to claim messages.",
                hint="Use MySQL 8.0.1+ or MariaDB 10.6+, PostgreSQL, Redis or RabbitMQ.",
                id="tq.W004",
            )
        )
    return messages


def _lacks_skip_locked(alias: str) -> bool:
    """Return whether ``alias`` is a MySQL/MariaDB server without ``SKIP LOCKED`` (connects)."""
    connection = connections[alias]
    return (
        connection.vendor == "mysql" and not connection.features.has_select_for_update_skip_locked
    )


def check_migrations_match_models() -> list[checks.CheckMessage]:
    """Warn (``tq.W003``) when django_tq's models have changes its migrations lack (what
    ``makemigrations django_tq --check`` finds): the tables would miss columns the code uses."""
    # Imported here, not at the top: the migration machinery is ~15 modules every process
    # (a worker's parent and its children) would hold for a check that runs only with the
    # databases (``migrate``, ``check --database``).
    from django.db.migrations.autodetector import MigrationAutodetector
    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.state import ProjectState

    loader = MigrationLoader(None, ignore_no_migrations=True)
    autodetector = MigrationAutodetector(loader.project_state(), ProjectState.from_apps(apps))
    changes = autodetector.changes(graph=loader.graph, trim_to_apps={"django_tq"})
    missing = changes.get("django_tq")
    if not missing:
        return []
    operations = [
        operation.describe() for migration in missing for operation in migration.operations
    ]
    return [
        checks.Warning(
            "django_tq's models have changes that its migrations lack: "
            f"{'; '.join(operations[:5])}.",
            hint="Install a django_tq release whose migrations match its code (never run "
            "makemigrations for django_tq in your project), then migrate.",
            id="tq.W003",
        )
    ]


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


def _cache_backend(alias: str) -> str:
    """Return the ``BACKEND`` of cache ``alias`` ("" when it names none)."""
    config: Any = settings.CACHES[alias]
    return str(config.get("BACKEND", ""))
