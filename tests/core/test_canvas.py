"""Workflows in-process: signatures, chains, groups, chords, callbacks, replace, the graph.

These run through ``django_tq.testing.capture`` (the worker's execute/record path, with publishes
captured) or eagerly; tests/core/test_canvas_worker.py runs them in real workers on every transport.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

import django_tq
from django_tq import GroupResult, chain, chord, group, signature, states
from django_tq.canvas import Signature
from django_tq.message import TaskMessage, decode, encode
from django_tq.models import ChordCounter, TaskResult
from django_tq.models import GroupResult as GroupRow
from django_tq.result import AsyncResult, workflow_graph
from django_tq.testing import capture
from tests.testapp.models import Execution
from tests.testapp.tasks import (
    add,
    echo_types,
    fail,
    ignored,
    mul,
    on_error,
    on_error_old_style,
    record_call,
    record_sum,
    replaced_by_add,
    replaced_by_chord,
    tsum,
)

pytestmark = pytest.mark.django_db(transaction=True)


# -- signatures ----------------------------------------------------------------------------------
def test_signatures_are_partials_and_values() -> None:
    partial = add.s(2)
    assert partial.clone((3,)).args == (3, 2)  # new arguments come first, as in Celery
    assert partial(5) == 7  # calling a signature runs the task inline
    changed = partial.set(queue="io", countdown=3)
    assert changed.options == {"queue": "io", "countdown": 3}
    assert partial.options == {}  # set() returns a copy
    immutable = add.si(1, 1)
    assert immutable.clone((99,)).args == (1, 1)
    assert signature("tests.testapp.tasks.add", (1,), {"y": 2}, queue="q").options == {"queue": "q"}


def test_signatures_round_trip_through_json_dicts() -> None:
    workflow = chain(
        add.s(1, 1),
        group(add.s(1), mul.s(2).set(priority=9)),
        tsum.s().on_error(on_error.s()),
    )
    data = workflow.to_dict()
    again = signature(data)
    assert again.to_dict() == data
    assert isinstance(again, chain) and isinstance(again.tasks[1], chord)  # group | x = chord
    message = TaskMessage(id="t1", task=add.name, link=(data,), chain=(add.s(2).to_dict(),))
    wire = encode(message)
    decoded = decode(wire.headers, wire.body, wire.content_type, queue="q", accept=["json"])
    assert decoded.link == (data,) and decoded.chain == message.chain


def test_exports_are_lazy_and_complete() -> None:
    for name in ("signature", "chain", "group", "chord", "Signature", "GroupResult"):
        assert getattr(django_tq, name) is not None
    assert django_tq.Signature is Signature


# -- eager ---------------------------------------------------------------------------------------
def test_eager_workflows_run_in_process(settings: Any) -> None:
    settings.TQ = {**settings.TQ, "ALWAYS_EAGER": True}
    assert (add.s(1, 2) | add.s(10) | mul.s(3)).delay().get() == 39
    assert group(add.s(i, i) for i in range(5)).delay().join() == [0, 2, 4, 6, 8]
    assert chord((add.s(i, 1) for i in range(4)), tsum.s()).delay().get() == 10
    assert chord(add.s(i, 1) for i in range(4))(tsum.s()).get() == 10
    assert replaced_by_add.delay(1).get() == 101
    assert add.map([]).delay().get() == []


def test_apply_runs_a_chain_eagerly_without_the_setting() -> None:
    result = (add.s(1, 2) | mul.s(2)).apply()
    assert result.get() == 6
    assert result.parent.get() == 3


# -- through the worker's path (capture) ---------------------------------------------------------
def test_chain_of_three_returns_the_composed_value() -> None:
    with capture() as queue:
        result = (add.s(1, 2) | add.s(3) | mul.s(10)).delay()
        queue.run_all()
    assert result.get(timeout=5) == 60
    assert result.parent.get(timeout=5) == 6
    first = result.parent.parent
    assert AsyncResult(result.id).parent == AsyncResult(result.parent.id)  # read from the rows
    assert [child.id for child in AsyncResult(first.id).children] == [result.parent.id]
    rows = TaskResult.objects.filter(root_id=first.id)
    assert rows.count() == 3


def test_immutable_steps_ignore_the_previous_result() -> None:
    with capture() as queue:
        result = (add.s(1, 2) | add.si(10, 10)).delay()
        queue.run_all()
    assert result.get(timeout=5) == 20


@pytest.mark.db
def test_group_results_are_in_order_and_stored() -> None:
    with capture() as queue:
        result = group(add.s(i, i) for i in range(100)).delay()
        queue.run_all()
    assert isinstance(result, GroupResult)
    assert result.join(timeout=10) == [2 * i for i in range(100)]
    assert result.completed_count() == 100 and result.ready() and result.successful()
    restored = GroupResult.restore(result.id)
    assert restored is not None and [r.id for r in restored.results] == [r.id for r in result]
    assert GroupRow.objects.get(group_id=result.id).date_done is not None


@pytest.mark.db
def test_chord_runs_its_body_once_with_the_header_results_in_order() -> None:
    with capture() as queue:
        result = chord((add.s(i, i) for i in range(10)), record_sum.s()).delay()
        queue.run_all()
    assert result.get(timeout=5) == sum(2 * i for i in range(10))
    assert Execution.objects.filter(label="body").count() == 1
    counter = ChordCounter.objects.get()
    assert counter.remaining == 0 and counter.state == ChordCounter.SUCCESS


@pytest.mark.db
def test_a_header_task_counted_twice_is_counted_once() -> None:
    """A redelivered header task (its result recorded again) must not decrement again."""
    from django_tq.execution import execute, record

    with capture() as queue:
        result = chord([add.s(1, 1), add.s(2, 2)], record_sum.s()).delay()
        first, second = queue.messages
        for message in (first, first):  # the first header task recorded twice
            record(message, execute(message), delivery_count=1)
        assert ChordCounter.objects.get().remaining == 1
        assert AsyncResult(result.id).state == states.PENDING
        record(second, execute(second), delivery_count=1)
        assert ChordCounter.objects.get().remaining == 0
        assert len(queue.filter(record_sum)) == 1


@pytest.mark.db
def test_a_failing_header_fails_the_chord_and_runs_the_errbacks_once() -> None:
    body = record_sum.s().on_error(on_error.s()).on_error(on_error_old_style.s())
    with capture() as queue:
        result = chord([add.s(1, 1), fail.s("header broke"), fail.s("again")], body).delay()
        queue.run_all()
    assert not Execution.objects.filter(label="body").exists()
    with pytest.raises(ValueError, match="header broke"):
        result.get(timeout=5)
    assert AsyncResult(result.id).state == states.FAILURE
    errbacks = list(Execution.objects.values_list("label", flat=True))
    assert errbacks.count("errback:ValueError:header broke") == 1
    assert errbacks.count("old-errback") == 1
    assert ChordCounter.objects.get().state == ChordCounter.FAILURE


def test_an_ignored_header_task_counts_with_no_result() -> None:
    with capture() as queue:
        result = chord([add.s(1, 1), ignored.s(), add.s(2, 2)], tsum.si([7])).delay()
        body = chord([add.s(1, 1), ignored.s()], echo_types.s()).delay()
        queue.run_all()
    assert result.get(timeout=5) == 7  # the chord did not wait for the ignored task
    assert body.get(timeout=5) == "list"  # the body got [2, None]
    assert ChordCounter.objects.filter(state=ChordCounter.SUCCESS).count() == 2


def test_link_and_link_error() -> None:
    with capture() as queue:
        ok = add.apply_async((1, 2), link=mul.s(5))
        broken = fail.apply_async(("bad",), link_error=[on_error.s(), on_error_old_style.s()])
        queue.run_all()
    [child] = AsyncResult(ok.id).children
    assert child.get(timeout=5) == 15
    labels = list(Execution.objects.filter(task_id=broken.id).values_list("label", flat=True))
    assert sorted(labels) == ["errback:ValueError:bad", "old-errback"]


IMMUTABLE_CALLS = ["call:'chord-failed'|", "call:'link-error'|", "call:'linked'|"]


def test_immutable_callbacks_and_errbacks_get_exactly_their_own_arguments() -> None:
    with capture() as queue:
        add.apply_async((1, 2), link=record_call.si("linked"))
        fail.apply_async(("bad",), link_error=record_call.si("link-error"))
        body = record_sum.s().on_error(record_call.si("chord-failed"))
        chord([add.s(1, 1), fail.s("header broke")], body).delay()
        queue.run_all()
    calls = Execution.objects.filter(label__startswith="call:").values_list("label", flat=True)
    assert sorted(calls) == IMMUTABLE_CALLS


def test_immutable_callbacks_and_errbacks_in_eager_mode(settings: Any) -> None:
    """An eager chord raises its header's error at the call (as Celery's): no chord errback."""
    settings.TQ = {**settings.TQ, "ALWAYS_EAGER": True}
    assert add.apply_async((1, 2), link=record_call.si("linked")).get() == 3
    with pytest.raises(ValueError, match="bad"):
        fail.apply_async(("bad",), link_error=record_call.si("link-error"))
    calls = Execution.objects.filter(label__startswith="call:").values_list("label", flat=True)
    assert sorted(calls) == IMMUTABLE_CALLS[1:]


def test_as_tuple_keeps_the_parent_chain_in_celerys_shape_and_round_trips() -> None:
    with capture() as queue:
        result = (add.s(1, 2) | add.s(3) | mul.s(10)).delay()
        queue.run_all()
    middle, first = result.parent, result.parent.parent
    as_tuple = result.as_tuple()
    assert as_tuple == ((result.id, ((middle.id, ((first.id, None), None)), None)), None)
    for value in (as_tuple, json.loads(json.dumps(as_tuple))):  # lists once stored as JSON
        rebuilt = AsyncResult.from_tuple(value)
        assert [rebuilt.id, rebuilt.parent.id, rebuilt.parent.parent.id] == [
            result.id,
            middle.id,
            first.id,
        ]
        assert rebuilt.parent.parent.parent is None
        assert (rebuilt.get(timeout=5), rebuilt.parent.get(timeout=5)) == (60, 6)
        assert rebuilt.as_tuple() == as_tuple


def test_a_chord_result_tuple_holds_its_header_group() -> None:
    with capture() as queue:
        result = chord([add.s(1, 1), add.s(2, 2)], tsum.s()).delay()
        queue.run_all()
    header = result.parent
    members = [((member.id, None), None) for member in header.results]
    assert result.as_tuple() == ((result.id, ((header.id, None), members)), None)
    rebuilt = AsyncResult.from_tuple(json.loads(json.dumps(result.as_tuple())))
    assert isinstance(rebuilt.parent, GroupResult)
    assert rebuilt.parent.id == header.id
    assert rebuilt.parent.join(timeout=5) == [2, 4]
    assert GroupResult.from_tuple(header.as_tuple()).results == header.results
    assert AsyncResult.from_tuple(("old-form", None)).id == "old-form"  # before parents were kept
    with pytest.raises(TypeError, match="group's tuple"):
        AsyncResult.from_tuple(header.as_tuple())
    with pytest.raises(TypeError, match="task's tuple"):
        GroupResult.from_tuple(result.as_tuple())


def test_a_failed_chain_step_fails_the_rest_instead_of_leaving_it_pending() -> None:
    with capture() as queue:
        result = (add.s(1, 1) | fail.si("middle") | add.s(1)).delay()
        queue.run_all()
    with pytest.raises(ValueError, match="middle"):
        result.get(timeout=5)


def test_replace_takes_over_the_id_and_the_chain() -> None:
    with capture() as queue:
        result = (replaced_by_add.s(1) | mul.s(2)).delay()
        queue.run_all()
    assert result.get(timeout=5) == 202
    assert result.parent.get(timeout=5) == 101


def test_the_graph_of_a_task_replaced_by_a_chord_shows_the_header() -> None:
    with capture() as queue:
        result = replaced_by_chord.delay(3)
        queue.run_all()
    assert result.get(timeout=5) == 6
    tree = workflow_graph(result.id)
    assert tree is not None and tree["id"] == result.id

    def names(node: dict[str, Any]) -> list[str]:
        return [node["name"], *(name for child in node["children"] for name in names(child))]

    assert names(tree).count("tests.testapp.tasks.add") == 3


def test_nested_workflows() -> None:
    with capture() as queue:
        group_of_chains = group(add.s(i, i) | mul.s(10) for i in range(3)).delay()
        chain_of_groups = chain(
            add.s(1, 1), group(add.s(1), add.s(2)), tsum.s(), group(mul.s(2), mul.s(3))
        ).delay()
        chord_with_chain_body = chord([add.s(1, 1), add.s(2, 2)], tsum.s() | mul.s(10)).delay()
        chord_of_chains = chord([add.s(1, 1) | mul.s(3), add.s(2, 2)], tsum.s()).delay()
        queue.run_all()
    assert group_of_chains.join(timeout=5) == [0, 20, 40]
    assert chain_of_groups.join(timeout=5) == [14, 21]  # 2 -> [3, 4] -> 7 -> [14, 21]
    assert chord_with_chain_body.get(timeout=5) == 60
    assert chord_of_chains.get(timeout=5) == 10


def test_chunks_map_and_starmap() -> None:
    with capture() as queue:
        chunked = add.chunks([(i, i) for i in range(10)], 3).delay()
        mapped = tsum.map([[1, 2], [3, 4]]).delay()
        starred = add.starmap([(1, 2), (3, 4)]).delay()
        queue.run_all()
    assert chunked.join(timeout=5) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
    assert mapped.get(timeout=5) == [3, 7]
    assert starred.get(timeout=5) == [3, 7]


def test_capture_sees_the_workflow_tasks() -> None:
    with capture() as queue:
        chord([add.s(1, 1), add.s(2, 2)], tsum.s()).delay()
        queue.assert_enqueued(add, count=2)
        queue.assert_not_enqueued(tsum)
        queue.run_all()
        queue.assert_enqueued(tsum, args=([2, 4],))


def test_graph_of_a_chain_of_a_group_of_chains() -> None:
    with capture() as queue:
        result = chain(
            add.s(1, 1), group(add.s(1) | mul.s(2), add.s(2) | mul.s(3)), tsum.s()
        ).delay()
        queue.run_all()
    assert result.get(timeout=5) == 6 + 12
    root = result.parent.parent  # tsum <- the header group <- add(1, 1)
    tree = workflow_graph(result.id)
    assert tree is not None and tree["id"] == root.id and tree["state"] == states.SUCCESS

    def shape(node: dict[str, Any]) -> Any:
        return (node["type"], node["name"].rsplit(".", 1)[-1], [shape(c) for c in node["children"]])

    chain_one = ("task", "add", [("task", "mul", [])])
    assert shape(tree) == (
        "task",
        "add",
        [
            (
                "group",
                "chord",
                [chain_one, ("task", "add", [("task", "mul", [])]), ("task", "tsum", [])],
            )
        ],
    )
    assert workflow_graph("no-such-id") is None


def test_chords_need_the_database_result_backend(settings: Any) -> None:
    settings.TQ = {**settings.TQ, "RESULT_BACKEND": None}
    with pytest.raises(ImproperlyConfigured, match="django-db"), capture():
        chord([add.s(1, 1)], tsum.s()).delay()


def test_an_empty_chord_runs_its_body_with_no_results() -> None:
    with capture() as queue:
        result = chord([], tsum.s()).delay()
        queue.run_all()
    assert result.get(timeout=5) == 0


def test_workflow_arguments_keep_their_django_types() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with capture() as queue:
        result = chord([echo_types.s(moment)], echo_types.s() | echo_types.si(moment)).delay()
        queue.run_all()
    assert result.get(timeout=5) == "datetime"
    assert result.parent.get(timeout=5) == "list"  # the header results arrive as a list
    assert result.parent.parent.join(timeout=5) == ["datetime"]


@pytest.mark.db
def test_groups_inside_workflows_are_waited_for_once() -> None:
    accumulate = signature("django_tq.accumulate")
    with capture() as queue:
        body_then_step = chain(
            chord([add.s(1, 1), add.s(2, 2)], group(tsum.s(), tsum.s())), tsum.s()
        ).delay()
        header_ending_with_group = chord([add.s(1, 1) | group(add.s(1), add.s(2))], accumulate)
        nested = header_ending_with_group.delay()
        queue.run_all()
    assert body_then_step.get(timeout=5) == 12  # [2, 4] -> [6, 6] -> 12, tsum ran once
    assert len(queue.filter(tsum)) == 3
    assert nested.get(timeout=5) == [[3, 4]]


def test_graph_of_a_chord_whose_header_ends_with_a_group() -> None:
    with capture() as queue:
        result = chord(
            [add.s(1, 1) | group(add.s(1), add.s(2))], signature("django_tq.accumulate")
        ).delay()
        queue.run_all()
    tree = workflow_graph(result.id)
    assert tree is not None

    def tasks(node: dict[str, Any]) -> list[str]:
        own = [node["id"]] if node["type"] == "task" else []
        return [*own, *(i for child in node["children"] for i in tasks(child))]

    found = tasks(tree)
    assert len(found) == len(set(found)) == TaskResult.objects.count()  # every row once
    assert result.id in found
