from __future__ import annotations

import datetime as dt
import decimal
import re
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_tq import serialization
from django_tq.conf import tq_settings
from django_tq.exceptions import AlreadyRegistered, DecodeError, EncodeError, TaskError
from django_tq.registry import registry
from django_tq.routing import route
from django_tq.tasks import Task, task


def test_defaults_are_read_through_one_object(settings):
    settings.TQ = {}
    assert tq_settings.BROKER_URL == "django://"
    assert dt.timedelta(days=7) == tq_settings.RESULT_EXPIRES
    assert tq_settings.WORKER_CONCURRENCY >= 1
    assert tq_settings.TIMEZONE == settings.TIME_ZONE


@pytest.mark.django_version
def test_settings_reload_when_overridden(settings):
    settings.TQ = {"DEFAULT_QUEUE": "first"}
    assert tq_settings.DEFAULT_QUEUE == "first"
    settings.TQ = {"DEFAULT_QUEUE": "second"}
    assert tq_settings.DEFAULT_QUEUE == "second"


def test_unknown_key_names_the_key(settings):
    settings.TQ = {"BROKER_ULR": "redis://"}
    with pytest.raises(ImproperlyConfigured, match="BROKER_ULR"):
        tq_settings.BROKER_URL  # noqa: B018


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("WORKER_POOL", "gevent"),
        ("LEASE_SECONDS", 0),
        ("RESULT_BACKEND", "memcache"),
        ("ACKS_LATE", "yes"),
    ],
)
def test_bad_values_name_the_key(settings, key, value):
    settings.TQ = {key: value}
    with pytest.raises(ImproperlyConfigured, match=key):
        tq_settings.check()


@pytest.mark.django_version
def test_system_check_reports_bad_settings(settings):
    from django_tq.checks import check_settings

    settings.TQ = {"BROKER_URL": "django://", "ACCEPT_CONTENT": ["json", "pickle"]}
    assert [m.id for m in check_settings()] == ["tq.W001"]
    settings.TQ = {"BROKER_URL": "django://?alias=nope"}
    assert [m.id for m in check_settings()] == ["tq.E004"]
    settings.TQ = {"RESULT_BACKEND": "django-cache://missing"}
    assert [m.id for m in check_settings()] == ["tq.E003"]


def test_json_round_trips_django_types():
    value = {
        "when": dt.datetime(2026, 3, 29, 2, 30, tzinfo=dt.UTC),
        "day": dt.date(2026, 1, 2),
        "at": dt.time(3, 4, 5),
        "wait": dt.timedelta(days=1, seconds=2, microseconds=3),
        "price": decimal.Decimal("12.30"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "blob": b"\x00\xff",
        "nested": [1, "two", None, True],
    }
    assert serialization.from_json(serialization.to_json(value)) == value


def test_json_refuses_what_it_cannot_carry():
    with pytest.raises(EncodeError, match="set"):
        serialization.to_json({1, 2})
    with pytest.raises(EncodeError):
        serialization.to_json(object())


def test_content_type_must_be_accepted():
    content_type, body = serialization.dumps([1], "pickle")
    with pytest.raises(DecodeError, match="not accepted"):
        serialization.loads(body, content_type, ["json"])
    with pytest.raises(DecodeError, match="malformed JSON"):
        serialization.loads("{nope", serialization.JSON, ["json"])


def test_exceptions_are_rebuilt_only_when_safe():
    rebuilt = serialization.exception_from_data(serialization.exception_to_data(ValueError("bad")))
    assert type(rebuilt) is ValueError and str(rebuilt) == "bad"
    unknown = serialization.exception_from_data(
        {"exc_type": "evil.module.Boom", "exc_message": "x", "exc_args": ["x"]}
    )
    assert isinstance(unknown, TaskError) and unknown.type_name == "evil.module.Boom"
    not_an_exception = serialization.exception_from_data(
        {"exc_type": "os.system", "exc_message": "ls"}
    )
    assert isinstance(not_an_exception, TaskError)


def test_routes_glob_regex_and_callable():
    routes = [
        {"shop.tasks.mail_*": {"queue": "mail"}, re.compile(r"shop\.tasks\.report_.*"): "reports"},
        lambda name, args, kwargs: (
            {"queue": "io", "priority": 7} if name.endswith(".fetch") else None
        ),
    ]
    assert route("shop.tasks.mail_receipt", routes) == {"queue": "mail"}
    assert route("shop.tasks.report_daily", routes) == {"queue": "reports"}
    assert route("crawler.fetch", routes) == {"queue": "io", "priority": 7}
    assert route("other.task", routes) is None


def test_task_decorator_bare_and_with_options():
    @task
    def plain(x: int) -> int:
        return x * 2

    @task(name="custom.name", queue="q", priority=7, bind=True)
    def bound(self: Task, x: int) -> str:
        return f"{self.name}:{x}"

    try:
        assert plain.name == f"{__name__}.plain"
        assert plain(3) == 6  # a direct call runs inline
        assert bound(1) == "custom.name:1"
        assert registry.get("custom.name") is bound
        assert bound.queue == "q" and bound.priority == 7
    finally:
        registry.unregister(plain.name)
        registry.unregister("custom.name")


def test_duplicate_task_names_raise():
    @task(name="dup.name")
    def first() -> None: ...

    try:
        with pytest.raises(AlreadyRegistered, match=r"dup\.name"):

            @task(name="dup.name")
            def second() -> None: ...
    finally:
        registry.unregister("dup.name")


def test_unknown_task_option_raises():
    with pytest.raises(TypeError, match="colour"):

        @task(colour="red")
        def painted() -> None: ...


@pytest.mark.django_version
def test_tasks_modules_are_autodiscovered():
    assert "tests.testapp.tasks.add" in registry


@pytest.mark.parametrize(
    "text",
    [
        '{"__tq__": "decimal", "v": "not a number"}',
        '{"__tq__": "datetime", "v": "yesterday"}',
        '{"__tq__": "bytes", "v": "!!!"}',
        '{"__tq__": "timedelta", "v": "x"}',
    ],
)
def test_malformed_tagged_values_are_decode_errors(text):
    with pytest.raises(DecodeError):
        serialization.from_json(text)
