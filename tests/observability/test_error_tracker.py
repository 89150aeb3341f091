"""Error trackers (Sentry, Rollbar...) hook into ``task_failed``: in a prefork worker's child, the
receiver gets the exception, the task (name), its id, args and kwargs, and the traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.testapp import signal_log
from tests.testapp.tasks import fail

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signal_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "signals.jsonl"
    monkeypatch.setenv(signal_log.ENV, str(path))  # the worker's processes connect the receivers
    yield path


def test_a_failing_task_reaches_a_task_failed_receiver_in_the_worker(
    start_worker: Any, signal_file: Path
) -> None:
    worker = start_worker("-P", "prefork", "-c", "2")
    result = fail.apply_async(kwargs={"message": "card declined"})
    positional = fail.delay("out of stock")
    for call in (result, positional):
        with pytest.raises(ValueError):
            call.get(timeout=30)

    def failures() -> list[dict[str, object]]:
        lines = signal_log.read(signal_file)
        return [line for line in lines if line["signal"] == "task_failed"]

    lines = wait_for(lambda: len(failures()) == 2 and failures(), what="two task_failed lines")
    by_id = {line["task_id"]: line for line in lines}
    assert set(by_id) == {result.id, positional.id}
    for line in lines:
        assert line["sender"] == fail.name
        assert line["pid"] not in (os.getpid(), worker.pid)  # a prefork child sent it
        assert "ValueError" in str(line["traceback"])
    assert by_id[result.id]["exception"] == ["ValueError", "card declined"]
    assert by_id[result.id]["args"] == [] and by_id[result.id]["kwargs"] == {
        "message": "card declined"
    }
    assert by_id[positional.id]["exception"] == ["ValueError", "out of stock"]
    assert by_id[positional.id]["args"] == ["out of stock"]
    assert by_id[positional.id]["kwargs"] == {}
