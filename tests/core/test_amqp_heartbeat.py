"""RabbitMQ heartbeats: a worker keeps its connection through a task longer than the heartbeat.

The broker drops a connection silent for about ``BROKER_HEARTBEAT`` seconds and redelivers what
it held: a worker must send heartbeats while a task runs too (the lease keeper's thread), or each
long task would run twice. A partitioned worker being dropped is tests/faults/test_network.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import AMQP_URL, require_service, wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import slow_record

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_task_longer_than_the_heartbeat_keeps_its_connection_and_runs_once(
    settings: Any, queue_name: str, start_worker: Any
) -> None:
    require_service("RabbitMQ", 5672)
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": AMQP_URL,
        "DEFAULT_QUEUE": queue_name,
        "BROKER_HEARTBEAT": 1,
    }
    worker = start_worker("-P", "solo", "--prefetch-multiplier", "1")
    long_one = slow_record.delay(5, "long")  # five heartbeats; the broker drops after ~2 missed
    after = slow_record.delay(0, "after")
    wait_for(
        lambda: Execution.objects.filter(task_id=after.id, label="end:after").exists(),
        60,
        what="the task after the long one",
    )
    assert Execution.objects.filter(task_id=long_one.id, label="start:long").count() == 1
    assert "Consuming from the broker failed" not in worker.output()
    assert long_one.get(timeout=10) == "long"
