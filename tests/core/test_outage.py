"""``Outage``: one warning when a step starts failing transiently, one info line when it works
again, a bug's traceback once per distinct failure, and back-off between attempts."""

from __future__ import annotations

import logging

import pytest
from django.db import OperationalError

from django_tq.exceptions import PublishError
from django_tq.outage import Outage

logger = logging.getLogger("django_tq.tests.outage")


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger.name and r.levelno == level]


def _locked() -> None:
    raise OperationalError("database is locked")


def test_a_transient_outage_logs_one_warning_then_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=logger.name)
    outage = Outage("Step x", logger)
    now = 0.0
    for _ in range(6):
        now = outage.retry_at
        assert outage.attempt(_locked, now) is False
    assert outage.attempt(lambda: None, outage.retry_at) is True

    [warning] = _records(caplog, logging.WARNING)
    assert warning.getMessage().startswith(
        "Step x failed: OperationalError: database is locked; retrying with back-off"
    )
    assert warning.exc_info is None  # no traceback for a busy database
    [info] = _records(caplog, logging.INFO)
    assert info.getMessage().startswith("Step x works again after")
    assert "(6 failed attempt(s))" in info.getMessage()
    assert len(_records(caplog, logging.DEBUG)) == 5
    assert not outage.is_failing


def test_back_off_doubles_up_to_the_maximum_and_skips_attempts_meanwhile() -> None:
    outage = Outage("Step x", logger, first_delay=0.5, max_delay=3.0)
    error = PublishError("the broker is down")
    assert [outage.failed(error, 10.0) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    calls: list[int] = []
    assert outage.attempt(lambda: calls.append(1), 12.9) is False  # still backing off
    assert calls == []
    assert outage.attempt(lambda: calls.append(1), 13.0) is True
    assert calls == [1]
    assert outage.failed(error, 20.0) == 0.5  # a new outage starts afresh


def _bug(kind: str) -> None:
    if kind == "key":
        raise KeyError("missing")
    raise ValueError(f"bad {kind}")


def test_a_bug_logs_its_traceback_once_per_distinct_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=logger.name)
    outage = Outage("Step x", logger)
    for kind in (
        "one",
        "two",
        "key",
        "three",
        "key",
    ):  # ValueError at one line, KeyError at another
        outage.attempt(lambda kind=kind: _bug(kind), outage.retry_at)
    errors = _records(caplog, logging.ERROR)
    assert [r.exc_info[0] for r in errors if r.exc_info] == [ValueError, KeyError]
    assert all(r.getMessage() == "Step x failed; retrying with back-off" for r in errors)

    outage.attempt(lambda: None, outage.retry_at)  # it works again: the same bug later is news
    outage.attempt(lambda: _bug("one"), outage.retry_at)
    assert len(_records(caplog, logging.ERROR)) == 3


def test_what_counts_as_transient_can_be_widened() -> None:
    outage = Outage("Step x", logger, transient=(OSError,))
    assert outage.is_transient(ConnectionResetError())
    assert not outage.is_transient(OperationalError("locked"))
