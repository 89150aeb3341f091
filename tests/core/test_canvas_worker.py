"""Workflows in real workers, on every transport, with results in the database.

Chord bodies are counted by the rows they write (``Execution``), never by the worker's own
bookkeeping: "exactly once" means one row.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_tq import chain, chord, group, states
from django_tq.exceptions import TaskError
from django_tq.models import ChordCounter, TaskResult
from django_tq.result import AsyncResult
from tests.conftest import wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import (
    add,
    fail,
    mul,
    on_error,
    record_call,
    record_sum,
    slow_add,
    tsum,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


def test_chain_group_and_nested_workflows(broker_url: str, start_worker: Any) -> None:
    start_worker("-P", "prefork", "-c", "2")
    composed = (add.s(1, 2) | add.s(3) | mul.s(10)).delay()
    members = group(add.s(i, i) for i in range(100)).delay()
    nested = chain(add.s(1, 1), group(add.s(1) | mul.s(2), add.s(2) | mul.s(3)), tsum.s()).delay()
    chord_chain_body = chord([add.s(1, 1), add.s(2, 2)], tsum.s() | mul.s(10)).delay()
    assert composed.get(timeout=30) == 60
    assert members.join(timeout=60) == [2 * i for i in range(100)]
    assert nested.get(timeout=30) == 6 + 12
    assert chord_chain_body.get(timeout=30) == 60


def test_chord_of_fifty_across_two_workers_runs_the_body_once(
    broker_url: str, start_worker: Any
) -> None:
    start_worker("-P", "solo", "-n", "one")
    start_worker("-P", "solo", "-n", "two")
    result = chord((add.s(i, 1) for i in range(50)), record_sum.s()).delay()
    assert result.get(timeout=60) == sum(i + 1 for i in range(50))
    assert Execution.objects.filter(label="body").count() == 1
    counter = ChordCounter.objects.get()
    assert (counter.remaining, counter.state) == (0, ChordCounter.SUCCESS)
    workers = set(AsyncResult(r.id).worker for r in result.parent.results)
    assert len(workers) == 2  # the header really ran on both workers


def test_a_failing_header_fails_the_chord_once(broker_url: str, start_worker: Any) -> None:
    start_worker("-P", "prefork", "-c", "2")
    body = record_sum.s().on_error(on_error.s())
    header = [add.s(1, 1), fail.s("header broke"), add.s(2, 2)]
    result = chord(header, body).delay()
    with pytest.raises(ValueError, match="header broke"):
        result.get(timeout=30)
    wait_for(lambda: result.parent.ready(), what="every header task final")
    assert not Execution.objects.filter(label="body").exists()
    labels = list(Execution.objects.values_list("label", flat=True))
    assert labels == ["errback:ValueError:header broke"]
    assert AsyncResult(result.id).state == states.FAILURE


def test_link_error_runs_once_with_the_exception(broker_url: str, start_worker: Any) -> None:
    start_worker("-P", "solo")
    broken = fail.apply_async(("bad input",), link_error=on_error.s())
    with pytest.raises(ValueError):
        broken.get(timeout=20)
    wait_for(lambda: Execution.objects.exists(), what="the errback's row")
    marker = add.delay(1, 1)  # anything the errback enqueued would have run by now
    marker.get(timeout=20)
    assert list(Execution.objects.values_list("task_id", "label")) == [
        (broken.id, "errback:ValueError:bad input")
    ]


def test_immutable_callbacks_and_errbacks_get_exactly_their_own_arguments(
    broker_url: str, start_worker: Any
) -> None:
    start_worker("-P", "prefork", "-c", "2")
    linked = add.apply_async((1, 2), link=record_call.si("linked"))
    broken = fail.apply_async(("bad input",), link_error=record_call.si("link-error"))
    body = record_sum.s().on_error(record_call.si("chord-failed"))
    failed_chord = chord([add.s(1, 1), fail.s("header broke")], body).delay()
    assert linked.get(timeout=30) == 3
    with pytest.raises(ValueError, match="bad input"):
        broken.get(timeout=30)
    with pytest.raises(ValueError, match="header broke"):
        failed_chord.get(timeout=30)
    calls = Execution.objects.filter(label__startswith="call:")
    wait_for(lambda: calls.count() == 3, what="the callback and both errbacks")
    assert add.delay(2, 2).get(timeout=30) == 4
    assert sorted(calls.values_list("label", flat=True)) == [
        "call:'chord-failed'|",
        "call:'link-error'|",
        "call:'linked'|",
    ]
    ran = dict(calls.values_list("label", "task_id"))
    parents = dict(TaskResult.objects.values_list("task_id", "parent_id"))
    assert parents[ran["call:'linked'|"]] == linked.id  # each one its own task, in the graph
    assert parents[ran["call:'link-error'|"]] == broken.id
    assert not Execution.objects.filter(label="body").exists()


def test_a_chord_survives_a_worker_killed_mid_header(
    broker_url: str, settings: Any, start_worker: Any
) -> None:
    settings.TQ = {**settings.TQ, "LEASE_SECONDS": 2}
    victim = start_worker("-P", "prefork", "-c", "2")
    result = chord((slow_add.s(i, 1, 1.0) for i in range(6)), record_sum.s()).delay()
    wait_for(lambda: Execution.objects.filter(label__startswith="start:").exists(), what="start")
    victim.kill_tree()
    start_worker("-P", "prefork", "-c", "2")
    assert result.get(timeout=60) == sum(i + 1 for i in range(6))
    assert Execution.objects.filter(label="body").count() == 1
    assert ChordCounter.objects.get().remaining == 0


def test_a_dead_lettered_header_fails_the_chord(broker_url: str, start_worker: Any) -> None:
    start_worker("-P", "solo")
    wrong_arity = add.s(1, 2, 3)  # dead-lettered by the worker: the arguments do not fit
    result = chord([add.s(1, 1), wrong_arity], record_sum.s()).delay()
    with pytest.raises(TaskError, match="dead-lettered"):
        result.get(timeout=30)
    assert ChordCounter.objects.get().state == ChordCounter.FAILURE
    assert not Execution.objects.filter(label="body").exists()
