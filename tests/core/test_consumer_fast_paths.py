"""The consumer's per-message shortcuts keep what the long way did.

The argument check remembers the shapes a task accepted (a wrong call is still refused every
time), a foreign producer's priority is read while decoding, an execution's runtime is set on its
own outcome, and the walk over every connection is skipped only right after the previous task's.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from django_tq import execution
from django_tq.message import TaskMessage, decode, encode
from django_tq.worker import consumer as consumer_module
from django_tq.worker.consumer import FITTING_SHAPES, TRUSTED_FOR, Consumer


def _fake(**attributes: Any) -> Any:
    return SimpleNamespace(_fitting=set(), **attributes)


def _message(*args: Any, **kwargs: Any) -> TaskMessage:
    return TaskMessage(id="m", task="tests.testapp.tasks.add", args=args, kwargs=kwargs)


def test_a_wrong_call_is_refused_every_time_after_right_ones() -> None:
    fake = _fake()
    for _ in range(3):
        Consumer._check_arguments(fake, _message(1, 2))
        Consumer._check_arguments(fake, _message(1, y=2))
        with pytest.raises(TypeError, match="too many positional arguments"):
            Consumer._check_arguments(fake, _message(1, 2, 3))
        with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
            Consumer._check_arguments(fake, _message(1, 2, z=3))
        with pytest.raises(TypeError, match="missing a required argument"):
            Consumer._check_arguments(fake, _message(1))
    assert len(fake._fitting) == 2  # only the shapes that bound are remembered


def test_the_remembered_shapes_are_bounded() -> None:
    fake = _fake()
    task = "tests.testapp.tasks.record_call"  # takes *args: every count binds
    for n in range(FITTING_SHAPES + 5):
        Consumer._check_arguments(fake, TaskMessage(id="m", task=task, args=(0,) * n))
    assert len(fake._fitting) <= FITTING_SHAPES


def test_the_brokers_priority_counts_only_when_the_headers_carry_none() -> None:
    def decoded(message: TaskMessage, priority: int | None) -> int | None:
        wire = encode(message)
        return decode(
            wire.headers,
            wire.body,
            wire.content_type,
            queue="q",
            accept=["json"],
            priority=priority,
        ).priority

    assert decoded(_message(1, 2), 7) == 7
    assert decoded(_message(1, 2), None) is None
    assert decoded(TaskMessage(id="m", task="t", priority=2), 7) == 2


def test_every_execution_gets_its_own_outcome_and_runtime() -> None:
    first = execution.execute(_message(1, 2))
    second = execution.execute(_message(3, 4))
    assert first is not second
    assert first.result == 3 and second.result == 7
    assert first.runtime > 0 and second.runtime > 0


def test_the_connection_walk_is_skipped_only_just_after_the_last_one(monkeypatch) -> None:
    walks: list[int] = []
    monkeypatch.setattr(consumer_module, "close_old_connections", lambda: walks.append(1))
    fake = SimpleNamespace(
        broker=SimpleNamespace(database_alias=None),
        _queue_db_used_at=-TRUSTED_FOR,
        _connections_checked_at=-TRUSTED_FOR,
    )
    Consumer._close_old_connections(fake)  # type: ignore[arg-type]
    assert len(walks) == 1
    fake._connections_checked_at = time.monotonic()  # the previous task's, just now
    Consumer._close_old_connections(fake)  # type: ignore[arg-type]
    assert len(walks) == 1
    fake._connections_checked_at = time.monotonic() - TRUSTED_FOR - 0.1
    Consumer._close_old_connections(fake)  # type: ignore[arg-type]
    assert len(walks) == 2
