"""A router sending every read to a read replica: claims, acks and result writes still work.

The replica is the ``other`` alias (the same database) made read-only for the test, so a write
routed to it fails loudly; reads go there, writes to ``default``. django_tq's queue claims run on
the transport's own connection of its alias, and the result backend reads and writes through
``db_for_write``: neither may land on the replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DatabaseError, connections

from django_tq import chord, states
from django_tq.models import QueueMessage, TaskResult
from django_tq.worker.embedded import EmbeddedWorker
from tests.testapp.models import Execution
from tests.testapp.tasks import add, flaky_until_third, tsum

pytestmark = pytest.mark.db

REPLICA = "other"

#: what makes a connection read-only, per vendor
READ_ONLY = {
    "postgresql": ("options", "-c default_transaction_read_only=on"),
    "sqlite": ("init_command", "PRAGMA query_only = ON;"),
    "mysql": ("init_command", "SET SESSION TRANSACTION READ ONLY"),
}


class ReadsFromReplica:
    """Reads go to the replica, writes to the primary (``default``)."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return REPLICA

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "default"

    def allow_relation(self, first: Any, second: Any, **hints: Any) -> bool:
        return True


@pytest.fixture
def read_replica(settings: Any) -> Iterator[None]:
    """Make ``other`` read-only and route every read to it."""
    alias_settings = connections.settings[REPLICA]
    saved = alias_settings.get("OPTIONS")
    options = dict(saved or {})  # a copy: the alias shares its OPTIONS dict with ``default``
    key, value = READ_ONLY[connections[REPLICA].vendor]
    options[key] = f"{options[key]} {value}" if key in options else value
    alias_settings["OPTIONS"] = options
    connections[REPLICA].close()
    settings.DATABASE_ROUTERS = [*settings.DATABASE_ROUTERS, f"{__name__}.ReadsFromReplica"]
    yield
    alias_settings["OPTIONS"] = saved
    connections[REPLICA].close()


@pytest.mark.django_db(transaction=True, databases=["default", REPLICA])
def test_claims_and_results_stay_on_the_primary(read_replica: None, queue_name: str) -> None:
    with pytest.raises(DatabaseError):  # the replica really refuses writes
        Execution.objects.using(REPLICA).create(task_id="x", label="refused")
    with EmbeddedWorker(queues=[queue_name]):
        plain = [add.apply_async((n, n), queue=queue_name) for n in range(10)]
        retried = flaky_until_third.apply_async(queue=queue_name)
        joined = chord(add.s(n, n).set(queue=queue_name) for n in range(3))(
            tsum.s().set(queue=queue_name)
        )
        assert [result.get(timeout=20) for result in plain] == [2 * n for n in range(10)]
        assert retried.get(timeout=20) == 2
        assert joined.get(timeout=20) == 6
    assert TaskResult.objects.filter(state=states.SUCCESS).count() >= 15
    assert not QueueMessage.objects.filter(queue=queue_name).exists()  # every message acked
