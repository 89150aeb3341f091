"""The ``django://`` claim walks its index whatever PostgreSQL's statistics say (a table just
truncated and refilled, autovacuum off): never a scan of the whole queue plus a sort."""

from __future__ import annotations

import pytest
from django.db import connection

from django_tq.broker import Broker
from django_tq.models import QueueMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


def _fill(queue: str, rows: int) -> None:
    """Insert ``rows`` ready messages in one statement, leaving the statistics as they were."""
    table = connection.ops.quote_name(QueueMessage._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (queue, priority, payload, not_before, delivery_count, "
            "created_at) SELECT %s, 0, repeat('x', 300), now(), 0, now() "
            "FROM generate_series(1, %s)",
            [queue, rows],
        )


def _plan(channel, queue: str) -> str:
    sql, params = channel.claim_statement(queue, 4)
    with channel.consumer_db.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.parametrize("rows", [0, 5_000, 100_000])
def test_claim_uses_the_claim_index_without_statistics(queue_name, rows):
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL planner question")
    table = connection.ops.quote_name(QueueMessage._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table}")  # as after a purge: no statistics at all
    _fill(queue_name, rows)
    broker = Broker("django://")
    subscription = broker.subscribe([queue_name], prefetch=4, on_delivery=lambda d: None)
    channel = subscription.channel
    try:
        plan = _plan(channel, queue_name)
        assert "Index Scan using tq_queue_claim" in plan, plan
        assert "Sort" not in plan, plan
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table}")
        analyzed = _plan(channel, queue_name)
        assert "Index Scan using tq_queue_claim" in analyzed, analyzed
        assert "Sort" not in analyzed, analyzed
    finally:
        subscription.close()
