"""The ``tq_worker`` pytest fixture (a real worker in threads of the test process) and
``django_tq.testing.run_worker_until_empty()`` (the worker's consumer, run in the test's thread)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import TestCase, TransactionTestCase

from django_tq import AsyncResult, chain, states
from django_tq.models import ParkedMessage, QueueMessage, WorkerState
from django_tq.testing import run_worker_until_empty
from django_tq.worker.embedded import EmbeddedWorker
from tests.conftest import wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import add, on_other_queue, record

pytestmark = pytest.mark.db


# -- tq_worker --------------------------------------------------------------------------------
def test_tq_worker_runs_what_a_view_enqueues(client: Any, tq_worker: EmbeddedWorker) -> None:
    response = client.post("/orders/", {"number": "A-1"})
    assert response.status_code == 201
    result = AsyncResult(response.json()["task_id"])
    assert result.get(timeout=10) is True  # the task found the order its view committed
    assert result.worker == tq_worker.hostname
    wait_for(lambda: tq_worker.processed == 1, what="the count (after the result and the ack)")


@pytest.mark.django_db  # a TestCase-style marker: tq_worker turns the test transactional
def test_tq_worker_makes_the_test_transactional(tq_worker: EmbeddedWorker) -> None:
    assert not connection.in_atomic_block  # the test's writes are committed, workers see them
    assert record.delay("seen").get(timeout=10) == "seen"
    assert Execution.objects.get().label == "seen"


def test_tq_worker_consumes_every_routed_queue_and_keeps_a_heartbeat(
    tq_worker: EmbeddedWorker,
) -> None:
    assert {django_settings.TQ.get("DEFAULT_QUEUE", "default"), "other"} <= set(tq_worker.queues)
    assert on_other_queue.delay().get(timeout=10) == "other"  # @task(queue="other")
    chained = chain(add.s(1, 2), add.s(3)).delay()
    assert chained.get(timeout=10) == 6
    row = WorkerState.objects.get(hostname=tq_worker.hostname)
    assert row.pool == "threads" and row.stopped_at is None


def test_tq_worker_releases_parked_messages(settings: Any, tq_worker: EmbeddedWorker) -> None:
    settings.TQ = {**settings.TQ, "ETA_HORIZON_SECONDS": 0}
    result = add.apply_async((2, 2), countdown=1)
    assert ParkedMessage.objects.filter(task_id=result.id).exists()
    assert result.get(timeout=15) == 4


class TestWithParameters:
    """``tq_worker_parameters`` configures the worker (here: one queue, two consumers)."""

    @pytest.fixture
    def tq_worker_parameters(self, queue_name: str) -> dict[str, Any]:
        return {"queues": [queue_name], "concurrency": 2, "hostname": "fixture-worker"}

    def test_the_worker_uses_them(self, queue_name: str, tq_worker: EmbeddedWorker) -> None:
        assert tq_worker.queues == (queue_name,)
        result = add.apply_async((1, 1), queue=queue_name)
        assert result.get(timeout=10) == 2
        assert AsyncResult(result.id).worker == "fixture-worker"
        row = WorkerState.objects.get(hostname="fixture-worker")
        assert row.concurrency == 2 and row.queues == [queue_name]


def test_tq_worker_refuses_tq_capture_in_the_same_test(
    request: pytest.FixtureRequest, tq_capture: Any
) -> None:
    with pytest.raises(pytest.fail.Exception, match="cannot be used in one test"):
        request.getfixturevalue("tq_worker")


@pytest.mark.django_db(transaction=True)
def test_a_stopped_embedded_worker_marks_its_heartbeat_stopped() -> None:
    with EmbeddedWorker(hostname="short-lived") as worker:
        assert add.delay(3, 4).get(timeout=10) == 7
    assert worker.processed == 1
    assert WorkerState.objects.get(hostname="short-lived").stopped_at is not None


@pytest.mark.django_version
def test_django_tasks_run_on_tq_worker(tq_worker: EmbeddedWorker) -> None:
    if not django_settings.HAS_DJANGO_TASKS:
        pytest.skip("neither django.tasks nor the django_tasks backport")
    from tests.djangotasks import tasks as dj

    result = dj.add.enqueue(20, 22)
    wait_for(lambda: (result.refresh(), result.is_finished)[1], what="the django.tasks Task")
    assert result.return_value == 42
    assert result.worker_ids == [tq_worker.hostname]


# -- run_worker_until_empty (unittest) -------------------------------------------------------------
class RunWorkerUntilEmptyTests(TransactionTestCase):
    def test_runs_queued_tasks_and_what_they_enqueue(self) -> None:
        first = add.delay(1, 2)
        chained = chain(record.si("one"), record.si("two")).delay()
        ran = run_worker_until_empty()
        self.assertEqual(ran, 3)
        self.assertEqual(first.get(timeout=1), 3)
        self.assertEqual(chained.get(timeout=1), "two")
        self.assertEqual(
            list(Execution.objects.order_by("id").values_list("label", flat=True)), ["one", "two"]
        )
        self.assertFalse(QueueMessage.objects.exists())
        self.assertEqual(run_worker_until_empty(), 0)

    def test_failures_are_recorded_not_raised(self) -> None:
        from tests.testapp.tasks import fail

        result = fail.delay("bad")
        self.assertEqual(run_worker_until_empty(), 1)
        self.assertEqual(AsyncResult(result.id).state, states.FAILURE)

    def test_a_message_whose_eta_is_ahead_stays_queued_and_free(self) -> None:
        later = add.apply_async((1, 1), countdown=20)
        self.assertEqual(run_worker_until_empty(), 0)
        row = QueueMessage.objects.get()
        self.assertIsNone(row.lease_owner)  # given back, not held by a consumer that is gone
        self.assertEqual(AsyncResult(later.id).state, states.QUEUED)

    def test_only_the_queues_asked_for(self) -> None:
        on_other = on_other_queue.delay()
        default = add.delay(2, 2)
        self.assertEqual(run_worker_until_empty(queues=["other"]), 1)
        self.assertEqual(on_other.get(timeout=1), "other")
        self.assertEqual(AsyncResult(default.id).state, states.QUEUED)


class RunWorkerUntilEmptyInsideTestCase(TestCase):
    def test_refuses_with_what_to_use_instead(self) -> None:
        add.delay(1, 2)
        with self.assertRaisesMessage(RuntimeError, "Use TransactionTestCase"):
            run_worker_until_empty()
        with self.assertRaisesMessage(RuntimeError, "capture()"):
            EmbeddedWorker().start()


@pytest.mark.django_db(transaction=True)
def test_an_in_memory_sqlite_database_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    monkeypatch.setitem(
        connection.settings_dict, "NAME", "file:memorydb_default?mode=memory&cache=shared"
    )
    with pytest.raises(RuntimeError, match=r"Give it a file: DATABASES\[alias\]\['TEST'\]"):
        EmbeddedWorker().start()
    with pytest.raises(RuntimeError, match="needs a SQLite database in a file"):
        run_worker_until_empty()
