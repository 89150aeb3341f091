"""django_tq's system checks: each id, when it fires, and that its message says what to change
(the table in docs/checks.md)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings

from django_tq.registry import registry
from django_tq.tasks import Task

pytestmark = pytest.mark.django_version

LIMITED_TASKS = ["tests.testapp.tasks.soft_limited", "tests.testapp.tasks.hard_limited"]


def ids(**kwargs: Any) -> list[str]:
    """Return the ids of django_tq's messages from Django's check framework."""
    return [m.id for m in run_checks(tags=["django_tq"], **kwargs) if m.id.startswith("tq.")]


def message(check_id: str, **kwargs: Any) -> Any:
    (found,) = [m for m in run_checks(tags=["django_tq"], **kwargs) if m.id == check_id]
    return found


def database_ids() -> list[str]:
    """Return the ids of django_tq's messages when the checks may use the database (migrate)."""
    return [m.id for m in run_checks(databases=["default"]) if m.id.startswith("tq.")]


def database_message(check_id: str) -> Any:
    (found,) = [m for m in run_checks(databases=["default"]) if m.id == check_id]
    return found


@pytest.fixture
def no_time_limited_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave out the test app's tasks that declare time limits (they would fire tq.W005)."""
    items = registry.items
    monkeypatch.setattr(
        registry,
        "items",
        lambda: [(n, t) for n, t in items() if not t.time_limit and not t.soft_time_limit],
    )


def test_a_clean_configuration_has_no_messages(settings: Any, no_time_limited_tasks: None) -> None:
    settings.TQ = {"BROKER_URL": "django://"}
    assert ids() == []


# -- tq.W003: models and migrations ------------------------------------------------------------
@pytest.mark.django_db
def test_w003_models_changed_without_a_migration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "tq.W003" not in database_ids()
    project_state = MigrationLoader.project_state

    def without_priority(self: MigrationLoader, *args: Any, **kwargs: Any) -> Any:
        state = project_state(self, *args, **kwargs)
        state.models["django_tq", "taskresult"].fields.pop("priority")  # as if 0009 were missing
        return state

    monkeypatch.setattr(MigrationLoader, "project_state", without_priority)
    warning = database_message("tq.W003")
    assert "Add field priority to taskresult" in warning.msg
    assert "never run makemigrations for django_tq" in warning.hint
    # not with every manage.py command (it reads every migration file), nor at tqworker's start
    assert "tq.W003" not in [m.id for m in run_checks()]
    assert "tq.W003" not in ids()


# -- tq.W004: django:// without row locks --------------------------------------------------------
def test_w004_sqlite_queue_with_several_prefork_processes_is_a_deploy_warning(
    settings: Any,
) -> None:
    settings.TQ = {"BROKER_URL": "django://", "WORKER_CONCURRENCY": 4, "WORKER_POOL": "prefork"}
    assert "tq.W004" not in ids()  # not outside --deploy
    if connection.vendor != "sqlite":  # PostgreSQL and MySQL lock rows: nothing to say
        assert "tq.W004" not in ids(include_deployment_checks=True)
        return
    warning = message("tq.W004", include_deployment_checks=True)
    assert "4 consuming processes" in warning.msg
    assert "cannot see -c/-P on a command line" in warning.msg
    assert "PostgreSQL" in warning.hint
    for harmless in (
        {"WORKER_CONCURRENCY": 1},
        {"WORKER_POOL": "threads", "WORKER_CONCURRENCY": 4},
        {"BROKER_URL": "redis://127.0.0.1:6379/0", "WORKER_CONCURRENCY": 4},
    ):
        settings.TQ = {"BROKER_URL": "django://", **harmless}
        assert "tq.W004" not in ids(include_deployment_checks=True), harmless


@pytest.mark.db
@pytest.mark.django_db
def test_w004_mysql_without_skip_locked(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    if connection.vendor != "mysql":
        pytest.skip("MySQL/MariaDB only")
    settings.TQ = {"BROKER_URL": "django://"}
    assert "tq.W004" not in database_ids()  # the CI's MariaDB has SKIP LOCKED
    monkeypatch.setattr(connection.features, "has_select_for_update_skip_locked", False)
    assert "without SKIP LOCKED" in database_message("tq.W004").msg


# -- tq.W005: time limits the pool cannot enforce --------------------------------------------------
def test_w005_time_limits_with_the_threads_or_solo_pool(
    settings: Any, no_time_limited_tasks: None
) -> None:
    settings.TQ = {"WORKER_POOL": "threads", "TASK_SOFT_TIME_LIMIT": 10}
    warning = message("tq.W005")
    assert "TQ['TASK_SOFT_TIME_LIMIT']" in warning.msg and "'threads'" in warning.msg
    assert "prefork" in warning.hint
    settings.TQ = {"WORKER_POOL": "solo", "TASK_SOFT_TIME_LIMIT": 10}
    assert "tq.W005" not in ids()  # solo enforces soft limits
    settings.TQ = {"WORKER_POOL": "solo", "TASK_TIME_LIMIT": 10}
    assert "no hard time limit" in message("tq.W005").msg
    settings.TQ = {"WORKER_POOL": "prefork", "TASK_TIME_LIMIT": 10}
    assert "tq.W005" not in ids()


def test_w005_names_the_tasks_that_declare_limits(settings: Any) -> None:
    limited = Task(lambda: None, name="tests.checks.limited", time_limit=5)
    registry.register(limited)
    try:
        settings.TQ = {"WORKER_POOL": "threads"}
        assert "tests.checks.limited (time_limit)" in message("tq.W005").msg
    finally:
        registry.unregister(limited.name)


# -- tq.E003 / tq.W006: the cache results live in ------------------------------------------------
def test_e003_and_w006_result_cache_missing_or_process_local(settings: Any) -> None:
    settings.TQ = {"RESULT_BACKEND": "django-cache://missing"}
    error = message("tq.E003")
    assert "'missing'" in error.msg and "results" in error.hint
    settings.CACHES = {
        **settings.CACHES,
        "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    }
    for alias, kind in (("local", "LocMemCache"), ("dummy", "DummyCache")):
        settings.TQ = {"RESULT_BACKEND": f"django-cache://{alias}"}
        warning = message("tq.W006")
        assert kind in warning.msg and "never seen by the web process" in warning.msg
    settings.TQ = {"RESULT_BACKEND": "django-cache"}  # the test settings' default is LocMem too
    assert "tq.W006" in ids()
    settings.TQ = {"RESULT_BACKEND": "django-cache://results"}  # django-redis
    assert "tq.W006" not in ids()


# -- tq.W001: pickle ---------------------------------------------------------------------------
def test_w001_pickle_accepted(settings: Any) -> None:
    settings.TQ = {"ACCEPT_CONTENT": ["json", "pickle"]}
    assert "arbitrary code" in message("tq.W001").msg
    settings.TQ = {"TASK_SERIALIZER": "pickle", "ACCEPT_CONTENT": ["json"]}
    assert "tq.W001" in ids()


# -- tq.W007: routed queues no worker consumes -----------------------------------------------------
def test_w007_a_routed_queue_no_worker_configuration_consumes(
    settings: Any, no_time_limited_tasks: None
) -> None:
    settings.TQ = {"TASK_ROUTES": {"shop.tasks.send_*": {"queue": "mail"}, "shop.io": "io"}}
    assert "tq.W007" not in ids()  # only with --deploy
    warnings = {
        m.msg.split("'")[1]: m
        for m in run_checks(tags=["django_tq"], include_deployment_checks=True)
        if m.id == "tq.W007"
    }
    assert {"mail", "io", "other"} <= set(warnings)  # "other": @task(queue="other") in testapp
    assert "TASK_ROUTES['shop.tasks.send_*']" in warnings["mail"].msg
    assert "Add 'mail' to TQ['WORKER_QUEUES']" in warnings["mail"].hint
    everything = ["default", "mail", "io", "other", "emails"]  # emails: a django.tasks Task
    settings.TQ = {**settings.TQ, "WORKER_QUEUES": everything}
    assert "tq.W007" not in ids(include_deployment_checks=True)


@override_settings(
    TASKS={
        "default": {
            "BACKEND": "django_tq.backends.TQTaskBackend",
            "QUEUES": ["default", "reports"],
        }
    }
)
def test_w007_counts_the_queues_of_a_django_tasks_backend(settings: Any) -> None:
    settings.TQ = {"DEFAULT_QUEUE": "main", "WORKER_QUEUES": ["main", "other", "emails"]}
    routed = [
        m.msg
        for m in run_checks(tags=["django_tq"], include_deployment_checks=True)
        if m.id == "tq.W007"
    ]
    assert (
        len(routed) == 1 and "'reports'" in routed[0] and "TASKS['default']['QUEUES']" in routed[0]
    )


def test_worker_queues_is_what_tqworker_consumes_without_q(settings: Any) -> None:
    from django_tq.queue_names import worker_queues

    settings.TQ = {"DEFAULT_QUEUE": "main"}
    assert worker_queues() == ["main"]
    settings.TQ = {"WORKER_QUEUES": ["main", "mail"]}
    assert worker_queues() == ["main", "mail"]


# -- tq.W008: DEBUG in a worker --------------------------------------------------------------------
def test_w008_debug_is_a_deploy_warning(settings: Any) -> None:
    settings.DEBUG = True
    assert "tq.W008" not in ids()
    warning = message("tq.W008", include_deployment_checks=True)
    assert "connection.queries" in warning.msg and "DEBUG = False" in warning.hint


# -- tq.E005: TQTaskBackend's settings -------------------------------------------------------------
@pytest.mark.django_db  # Django 6 runs every check with the databases
def test_e005_options_given_to_the_django_tasks_backend(settings: Any) -> None:
    if not settings.HAS_DJANGO_TASKS:
        pytest.skip("neither django.tasks nor the django_tasks backport")
    with override_settings(
        TASKS={"default": {"BACKEND": "django_tq.backends.TQTaskBackend", "OPTIONS": {"url": 1}}}
    ):
        errors = [m for m in run_checks() if m.id == "tq.E005"]
    assert len(errors) == 1 and "url" in errors[0].msg and "TQ setting" in errors[0].hint


@pytest.mark.parametrize(
    ("url", "options", "why"),
    [
        ("redis://127.0.0.1:6379/0", {}, "not RabbitMQ (redis://)"),
        ("django://", {}, "not RabbitMQ (django://)"),
        ("amqp://guest:guest@127.0.0.1:5672//", {"confirm_publish": False}, "confirm_publish"),
    ],
)
def test_w009_batch_confirms_where_they_are_ignored(
    settings: Any, url: str, options: dict[str, Any], why: str
) -> None:
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": url,
        "BROKER_TRANSPORT_OPTIONS": options,
        "BROKER_CONFIRM": "batch",
    }
    warning = message("tq.W009")
    assert why in warning.msg and "ignored" in warning.msg
    assert "BROKER_CONFIRM" in warning.hint
    settings.TQ = {**settings.TQ, "BROKER_CONFIRM": "wait"}
    assert "tq.W009" not in ids()


@pytest.mark.parametrize("scheme", ["amqp", "pyamqp", "amqps"])
def test_w009_not_with_rabbitmq_and_its_confirms(settings: Any, scheme: str) -> None:
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": f"{scheme}://guest:guest@127.0.0.1:5672//",
        "BROKER_CONFIRM": "batch",
    }
    assert "tq.W009" not in ids()
