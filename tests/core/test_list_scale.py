"""The results lists stay fast with 100k rows: a few queries per page, whatever the filter, no
unbounded ``COUNT(*)``, and the filters served by the indexes of ``TaskResult``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_tq import states
from django_tq.admin.display import RecentValuesFilter
from django_tq.models import TaskResult

pytestmark = [pytest.mark.django_db, pytest.mark.db]

ROWS = 100_000
STATES = [states.SUCCESS, states.FAILURE, states.DEAD, states.QUEUED]
NAMES = [f"app.tasks.job_{number}" for number in range(20)]


def insert_results(rows: list[dict[str, Any]]) -> None:
    """Insert result rows in seconds: one prepared statement (``COPY`` on PostgreSQL).

    ``bulk_create`` takes a minute for 100k rows on a busy machine (SQLite: 45 rows a statement).
    """
    database = connections[DEFAULT_DB_ALIAS]
    fields = [field for field in TaskResult._meta.concrete_fields if not field.primary_key]
    quote = database.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        quote(TaskResult._meta.db_table),
        ", ".join(quote(field.column) for field in fields),
        ", ".join(["%s"] * len(fields)),
    )
    constant = {
        field.attname: field.get_db_prep_save(field.get_default(), database) for field in fields
    }

    def prepared(field: Any, value: Any) -> Any:
        if field.get_internal_type() == "CharField":
            return value  # strings go to the driver as they are
        return field.get_db_prep_save(value, database)

    params = [
        [
            prepared(field, row[field.attname]) if field.attname in row else constant[field.attname]
            for field in fields
        ]
        for row in rows
    ]
    with database.cursor() as cursor:
        if database.vendor == "postgresql":
            columns = ", ".join(quote(field.column) for field in fields)
            table = quote(TaskResult._meta.db_table)
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for values in params:
                    copy.write_row(values)
        else:
            cursor.executemany(sql, params)


def result_row(number: int, now: dt.datetime, **fields: Any) -> dict[str, Any]:
    """Return the columns of result number ``number`` (created ``number`` seconds before ``now``)."""
    row = {
        "task_id": f"t-{number:06d}",
        "task_name": NAMES[number % len(NAMES)],
        "state": STATES[number % len(STATES)],
        "queue": f"q{number % 3}",
        "worker": f"tq@host{number % 5}",
        "date_created": now - dt.timedelta(seconds=number),
    }
    row.update(fields)
    return row


@pytest.fixture
def many() -> None:
    now = timezone.now()
    insert_results([result_row(number, now) for number in range(ROWS)])


def _queries(client: Any, url: str, query: dict[str, str]) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, query)
    assert response.status_code == 200, response.content[:500]
    return [entry["sql"] for entry in captured.captured_queries]


ADMIN_FILTERS: list[dict[str, str]] = [
    {},
    {"state": states.FAILURE},
    {"task_name": NAMES[3]},
    {"queue": "q1"},
    {"worker": "tq@host2"},
    {"date_created__gte": "2000-01-01 00:00:00+00:00"},
    {"q": "t-000042"},
    {"q": NAMES[7]},
    {"state": states.DEAD, "queue": "q2", "p": "3"},
]


def test_admin_and_rest_lists_use_a_few_queries_with_100k_results(
    admin_client: Any, many: None
) -> None:
    assert TaskResult.objects.count() == ROWS
    url = reverse("admin:django_tq_taskresult_changelist")
    counts = {}
    for query in ADMIN_FILTERS:
        sql = _queries(admin_client, url, query)
        counts[tuple(query)] = len(sql)
        for statement in sql:
            if "COUNT(" in statement.upper():
                assert "LIMIT" in statement.upper(), statement  # never an unbounded count
            assert "DISTINCT" not in statement.upper(), statement  # no full scan for the sidebar
    # the same handful of queries whatever the filter: session, user, one capped count, the
    # page, and the latest values of each sidebar filter (state, task, queue, worker)
    assert len(set(counts.values())) == 1, counts
    assert max(counts.values()) <= 10, counts

    page = admin_client.get(url)
    assert "More than 10,000 task results" in page.content.decode()
    assert len(page.context["cl"].result_list) == 50

    api = "/api/tq/results/"
    for query in [{}, {"state": states.FAILURE}, {"task_name": NAMES[3], "queue": "q0"}]:
        sql = _queries(admin_client, api, {**query, "page_size": "200"})
        assert len(sql) <= 3, sql  # session, user, the page (owners joined in)
        assert not any("COUNT(" in statement.upper() for statement in sql)


#: (filter, the index meant to serve it)
INDEXED = [
    ({"state": states.FAILURE}, "tq_result_state_created"),
    ({"task_name": "rare.task"}, "tq_result_name_created"),
    ({"queue": "rare"}, "tq_result_queue_created"),
    ({"worker": "tq@rare"}, "tq_result_worker_created"),
]
#: what a query plan says when it reads the whole table
FULL_SCAN = {"sqlite": "SCAN django_tq_taskresult\n", "postgresql": "Seq Scan", "mysql": "ALL"}


@pytest.mark.django_db(transaction=True)  # MySQL's ANALYZE TABLE commits: flush the rows after
def test_the_filters_use_the_indexes() -> None:
    now = timezone.now()
    rare = {"state": states.FAILURE, "task_name": "rare.task", "queue": "rare", "worker": "tq@rare"}
    insert_results(
        [
            result_row(
                number, now, **({"state": states.SUCCESS} | (rare if number % 500 == 0 else {}))
            )
            for number in range(20_000)
        ]
    )
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(TaskResult._meta.db_table)
        cursor.execute(
            f"ANALYZE TABLE {table}" if connection.vendor == "mysql" else f"ANALYZE {table}"
        )
        if connection.vendor == "mysql":
            cursor.fetchall()
    for lookups, index in INDEXED:
        plan = TaskResult.objects.filter(**lookups).order_by("-date_created")[:50].explain()
        assert index in plan, plan
        assert FULL_SCAN[connection.vendor] not in plan + "\n", plan


def test_the_sidebar_offers_recent_values_every_state_and_the_chosen_one(
    admin_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RecentValuesFilter, "window", 2)
    now = timezone.now()
    insert_results(
        [
            result_row(0, now, task_id="old", queue="old-queue", state="PROGRESS"),
            result_row(1, now, task_id="new-1", queue="a", state=states.SUCCESS),
            result_row(2, now, task_id="new-2", queue="b", state=states.SUCCESS),
        ]
    )
    url = reverse("admin:django_tq_taskresult_changelist")

    def offered(query: dict[str, str], field: str) -> set[str]:
        changelist = admin_client.get(url, query).context["cl"]
        (spec,) = [spec for spec in changelist.filter_specs if spec.field_path == field]
        return {str(choice["display"]) for choice in spec.choices(changelist)}

    assert {"a", "b"} <= offered({}, "queue") and "old-queue" not in offered({}, "queue")
    assert "old-queue" in offered({"queue": "old-queue"}, "queue")  # the one chosen
    shown = admin_client.get(url, {"queue": "old-queue"}).context["cl"].result_list
    assert [row.task_id for row in shown] == ["old"]
    assert {states.FAILURE, states.DEAD, states.SUCCESS} <= offered({}, "state")  # always there
    assert "PROGRESS" not in offered({}, "state")  # a custom state only when recent
