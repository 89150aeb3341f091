"""The indexes of ``TaskResult``: few enough that writing a plain task's row stays cheap, and
each query of the admin, the REST API, cleanup and the graph still has one it can use."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from django_tq import states
from django_tq.message import TaskMessage
from django_tq.models import TaskResult
from django_tq.result_backends import get_backend

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


@pytest.fixture
def postgresql() -> Iterator[None]:
    """Plans where only an index scan is allowed: a query its index cannot serve shows a
    sequential scan (priced off, still chosen), never a silent fallback."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL planner question")
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
    yield
    with connection.cursor() as cursor:
        cursor.execute("RESET enable_seqscan")


def _indexes() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s",
            [TaskResult._meta.db_table],
        )
        return dict(cursor.fetchall())


def _plan(rows: Any) -> str:
    return str(rows.explain())


def test_a_plain_task_s_row_is_in_8_indexes(postgresql: None):
    indexes = _indexes()
    assert not [name for name in indexes if name.endswith("_like")], indexes  # exact lookups only
    # the primary key, task_id, state, name, queue, worker, the default order and root_id;
    # owner, group, parent and date_done only where set (NULL for a plain task until it ends)
    partial = {name for name, sql in indexes.items() if " WHERE " in sql}
    assert partial == {
        "tq_result_done",
        "tq_result_owner_created",
        "tq_result_group",
        "tq_result_parent",
    }
    assert len(indexes) - len(partial) == 8, sorted(indexes)


def test_every_query_on_results_still_has_its_index(postgresql: None):
    user = get_user_model().objects.create(username="owner-of-results")
    now = timezone.now()
    TaskResult.objects.bulk_create(
        TaskResult(
            task_id=f"ix-{n}",
            task_name=f"t{n % 7}",
            state=states.SUCCESS if n % 2 else states.STARTED,
            queue=f"q{n % 3}",
            worker=f"w{n % 5}",
            owner=user if n % 10 == 0 else None,
            group_id="g1" if n % 50 == 0 else None,
            parent_id="ix-0" if n % 40 == 1 else None,
            root_id=f"ix-{n - n % 100}",
            date_done=now - dt.timedelta(days=n % 30) if n % 2 else None,
        )
        for n in range(2000)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(TaskResult._meta.db_table)}")
    rows = TaskResult.objects.all()
    expected = {
        # REST API and admin: own results newest first, a state, a task name, a queue, a worker
        "tq_result_owner_created": rows.filter(owner=user).order_by("-date_created"),
        "tq_result_state_created": rows.filter(state=states.FAILURE).order_by("-date_created"),
        "tq_result_name_created": rows.filter(task_name="t3").order_by("-date_created"),
        "tq_result_queue_created": rows.filter(queue="q1").order_by("-date_created"),
        "tq_result_worker_created": rows.filter(worker="w2").order_by("-date_created"),
        "tq_result_created": rows.order_by("-date_created", "-id")[:50],
        # cleanup and the dashboard's throughput chart
        "tq_result_done": rows.done_before(now - dt.timedelta(days=20)).order_by("date_done"),
        # groups, children, the graph
        "tq_result_group": rows.filter(group_id="g1"),
        "tq_result_parent": rows.filter(parent_id="ix-0").order_by("date_created", "id"),
        "tq_result_root": rows.filter(root_id="ix-0").order_by("date_created", "id"),
    }
    for index, query in expected.items():
        plan = _plan(query)
        assert index in plan, f"{index} not used:\n{plan}"
    assert "Seq Scan" not in _plan(rows.filter(date_done__gte=now - dt.timedelta(days=1)))
    assert get_backend().children("ix-0")  # children() is the parent_id query above


def test_a_plain_task_s_row_is_written_and_found_through_the_partial_indexes(postgresql: None):
    backend = get_backend()
    message = TaskMessage(id="ix-plain", task="tests.testapp.tasks.add", args=(1, 2))
    backend.mark_queued(message)
    backend.mark_started(message, worker="w@a", delivery_count=1)
    backend.store(message, states.SUCCESS, result=3, worker="w@a", delivery_count=1)
    row = TaskResult.objects.get(task_id="ix-plain")
    assert (row.owner_id, row.group_id, row.parent_id) == (None, None, None)
    assert row.state == states.SUCCESS and row.date_done is not None
    # and the row is found by the partial date_done index once it is done
    assert (
        TaskResult.objects.done_before(timezone.now() + dt.timedelta(seconds=1))
        .filter(task_id="ix-plain")
        .exists()
    )


def test_the_partial_indexes_are_full_ones_without_a_warning_where_there_are_none():
    # MySQL and MariaDB: no partial indexes. A plain ``condition`` would warn (models.W037) at
    # every migrate; PartialIndex is a full index there, partial where the database can.
    assert not [m for m in TaskResult.check(databases=["default"]) if m.id == "models.W037"]
    sql = {
        name: sql
        for name, sql in _index_sql().items()
        if name in {"tq_result_done", "tq_result_group", "tq_result_parent"}
    }
    partial = connection.features.supports_partial_indexes
    assert len(sql) == 3 and all((" WHERE " in s) == partial for s in sql.values()), sql


def _index_sql() -> dict[str, str]:
    """Return the CREATE INDEX statement of each of TaskResult's Meta indexes, by name."""
    with connection.schema_editor(collect_sql=True) as editor:
        return {
            index.name: str(index.create_sql(TaskResult, editor))
            for index in TaskResult._meta.indexes
        }
