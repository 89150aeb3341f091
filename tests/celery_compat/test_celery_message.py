"""Celery protocol 2 messages, built by Celery's own ``as_task_v2``, read as django_tq's."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pytest
from kombu.utils.json import dumps

from django_tq import celery_message
from django_tq.exceptions import DecodeError

celery = pytest.importorskip("celery")

APP = celery.Celery("producer", set_as_current=False)
ADD = "tests.testapp.tasks.add"


def sig(name: str = ADD, *args: Any, **options: Any) -> Any:
    return APP.signature(name, args, **options)


def wire(name: str = ADD, args: Any = (2, 3), kwargs: Any = None, **options: Any) -> Any:
    """Return ``(headers, body)`` of the message Celery publishes for this call."""
    message = APP.amqp.as_task_v2("id-1", name, args, kwargs or {}, **options)
    return message.headers, dumps(message.body)


def decoded(name: str = ADD, args: Any = (2, 3), kwargs: Any = None, **options: Any) -> Any:
    headers, body = wire(name, args, kwargs, **options)
    assert celery_message.is_celery(headers)
    return celery_message.decode(headers, body, "application/json", queue="q")


def test_the_headers_and_arguments_map() -> None:
    eta = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
    message = decoded(
        args=(2, decimal.Decimal("1.5")),
        kwargs={"when": eta},
        eta=eta,
        expires=eta + dt.timedelta(hours=1),
        retries=2,
        group_id="g-1",
        root_id="root",
        parent_id="parent",
        time_limit=30,
        soft_time_limit=20,
        shadow="adding",
    )
    assert (message.id, message.task, message.queue) == ("id-1", ADD, "q")
    assert message.args == (2, decimal.Decimal("1.5")) and message.kwargs == {"when": eta}
    assert message.eta == eta and message.expires == eta + dt.timedelta(hours=1)
    assert (message.retries, message.group_id, message.root_id, message.parent_id) == (
        2, "g-1", "root", "parent",
    )  # fmt: skip
    assert (message.time_limit, message.soft_time_limit, message.shadow) == (30, 20, "adding")
    assert message.headers == {"celery": True}  # self.request.headers tells where it came from


def test_callbacks_errbacks_and_the_rest_of_a_chain_map() -> None:
    message = decoded(
        callbacks=[sig("tests.testapp.tasks.mul", 10)],
        errbacks=[sig("tests.testapp.tasks.on_error_old_style", immutable=False)],
        chain=[sig("tests.testapp.tasks.tsum"), sig("tests.testapp.tasks.mul", 2)],
    )
    assert [(s["task"], s["args"]) for s in message.link] == [("tests.testapp.tasks.mul", [10])]
    assert [s["task"] for s in message.link_error] == ["tests.testapp.tasks.on_error_old_style"]
    # Celery keeps the next step last; django_tq keeps it first
    assert [s["task"] for s in message.chain] == [
        "tests.testapp.tasks.mul",
        "tests.testapp.tasks.tsum",
    ]


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"chord": sig()}, "chord header task"),
        ({"callbacks": [celery.group(sig(), sig())]}, "a group signature"),
        ({"callbacks": [sig(link=sig())]}, r"option\(s\) link are not mapped"),
        ({"callbacks": [sig(exchange_type="topic", mandatory=True)]}, "exchange_type, mandatory"),
    ],
)
def test_what_does_not_map_is_refused_with_the_reason(options: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decoded(**options)


def test_a_pickle_or_malformed_body_is_refused_unread() -> None:
    headers, _body = wire()
    with pytest.raises(DecodeError, match="never pickle"):
        celery_message.decode(headers, b"\x80\x04junk", "application/x-python-serialize", queue="q")
    with pytest.raises(DecodeError, match=r"\[args, kwargs, embed\]"):
        celery_message.decode(headers, '{"args": []}', "application/json", queue="q")
    with pytest.raises(DecodeError, match="not valid JSON"):
        celery_message.decode(headers, "[1, 2", "application/json", queue="q")
    assert not celery_message.is_celery({"tq": 1, "task": ADD, "lang": "py"})
