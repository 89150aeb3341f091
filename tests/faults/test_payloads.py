"""A pickle payload published raw onto the queue is never unpickled, on every transport."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from django_tq import AsyncResult, states
from django_tq.broker import get_broker
from django_tq.message import TaskMessage, WireMessage, encode
from django_tq.models import DeadLetter
from django_tq.serialization import JSON, PICKLE
from tests.conftest import wait_for
from tests.testapp.tasks import add

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


class Sentinel:
    """Unpickling this creates ``path``: the proof that a payload was decoded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_a_pickle_payload_never_runs(broker_url, settings, start_worker, tmp_path):
    queue = settings.TQ["DEFAULT_QUEUE"]
    sentinel = tmp_path / "unpickled"
    body = pickle.dumps({"args": [Sentinel(sentinel)], "kwargs": {}})
    worker = start_worker("-P", "prefork", "-c", "1")
    # As pickle, as pickle claiming to be JSON, and with no content type at all.
    for task_id, content_type in (("pickle", PICKLE), ("as-json", JSON), ("untyped", "")):
        headers = encode(TaskMessage(id=task_id, task="tests.testapp.tasks.add", queue=queue))
        wire = WireMessage(headers=headers.headers, body=body, content_type=content_type)
        get_broker().publish(wire, queue=queue)
    assert add.delay(2, 3).get(timeout=30) == 5  # consumed after them: the worker lives on
    wait_for(lambda: DeadLetter.objects.count() == 3, 30, what="3 dead letters")
    letters = {letter.task_id: letter for letter in DeadLetter.objects.all()}
    assert "not accepted" in letters["pickle"].reason
    for task_id in ("as-json", "untyped"):
        assert letters[task_id].reason.startswith("undecodable message")
    for task_id, letter in letters.items():
        assert AsyncResult(task_id).state == states.DEAD
        assert letter.payload.startswith("base64:")  # kept for inspection, still undecoded
    assert not sentinel.exists()
    assert worker.process.poll() is None
