"""Unique tasks: a second enqueue of a queued or running key returns the first task (SPEC 3.3)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_tq import states, unique
from django_tq.broker import get_broker
from django_tq.execution import execute, record
from django_tq.message import TaskMessage, encode, round_trip
from django_tq.models import DeadLetter, QueueMessage, TaskResult, UniqueLock
from django_tq.testing import capture
from tests.conftest import wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import add, fail, slow_sync, sync_user, unique_retries

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.db
def test_second_enqueue_returns_the_queued_task():
    first = sync_user.delay(7)
    again = sync_user.delay(user_id=7, label="other label")  # keyword, other arguments ignored
    other_user = sync_user.delay(8)
    assert again.id == first.id != other_user.id
    assert QueueMessage.objects.count() == 2
    assert TaskResult.objects.count() == 2
    lock = UniqueLock.objects.get(task_id=first.id)
    assert lock.key == 'tests.testapp.tasks.sync_user:{"user_id":7}'
    assert timezone.now() + dt.timedelta(seconds=590) < lock.expires_at  # unique_ttl=600


def test_tasks_without_a_key_never_touch_the_lock_table():
    with CaptureQueriesContext(connection) as queries, capture() as queue:
        add.delay(1, 2)
        queue.run_all()
    assert queries.captured_queries
    assert not [query for query in queries if "uniquelock" in query["sql"]]


def test_unique_true_keys_on_every_argument_with_defaults():
    assert slow_sync.unique_key_for((1,), {}) == slow_sync.unique_key_for((), {"user_id": 1})
    assert slow_sync.unique_key_for((1,), {}) == slow_sync.unique_key_for((1, 1.0), {})
    assert slow_sync.unique_key_for((1,), {}) != slow_sync.unique_key_for((1, 2.0), {})
    assert add.unique_key_for((1, 2), {}) is None


@pytest.mark.db
def test_explicit_unique_key_and_long_keys():
    first = add.apply_async((1, 2), unique_key="nightly-report")
    assert add.apply_async((3, 4), unique_key="nightly-report").id == first.id
    assert add.apply_async((1, 2)).id != first.id  # no key, no lock
    long = "x" * 400
    assert len(unique.fit(long)) == unique.MAX_KEY_LENGTH
    assert unique.fit(long) != unique.fit(long + "y")
    assert add.apply_async((1, 2), unique_key=long).id == add.apply_async(unique_key=long).id


def test_declaring_unknown_argument_names_fails():
    from django_tq.tasks import Task

    with pytest.raises(ValueError, match="does not take"):
        Task(lambda user_id: None, name="t.bad_unique", unique=("account",))


@pytest.mark.db
def test_same_key_inside_one_transaction_and_after_rollback():
    with transaction.atomic():
        first = sync_user.delay(1)
        assert sync_user.delay(1).id == first.id
    assert UniqueLock.objects.get().task_id == first.id
    UniqueLock.objects.all().delete()
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = sync_user.delay(2)
        raise RuntimeError("rollback")
    assert not UniqueLock.objects.exists()  # the lock rolled back with the transaction
    after = sync_user.delay(2)
    assert after.id != rolled_back.id
    assert UniqueLock.objects.get().task_id == after.id


@pytest.mark.db
def test_a_stale_lock_is_taken_over():
    first = sync_user.delay(3)
    UniqueLock.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    second = sync_user.delay(3)
    assert second.id != first.id
    assert UniqueLock.objects.get().task_id == second.id


@pytest.mark.db
def test_a_lock_left_by_a_finished_task_is_taken_over():
    first = sync_user.delay(4)
    TaskResult.objects.filter(task_id=first.id).update(state=states.FAILURE)  # e.g. hard limit
    second = sync_user.delay(4)
    assert second.id != first.id
    assert UniqueLock.objects.get().task_id == second.id


@pytest.mark.db
@pytest.mark.parametrize("task, state", [(sync_user, states.SUCCESS), (fail, states.FAILURE)])
def test_the_lock_is_released_when_the_task_finishes(task, state):
    with capture() as queue:
        first = task.apply_async(("x",), unique_key="k")
        assert task.apply_async(("x",), unique_key="k").id == first.id
        outcomes = queue.run_all()
    assert outcomes[first.id].state == state
    assert not UniqueLock.objects.exists()
    with capture():
        assert task.apply_async(("x",), unique_key="k").id != first.id


@pytest.mark.db
def test_expired_and_revoked_tasks_release_the_lock():
    with capture() as queue:
        expired = sync_user.apply_async((5,), expires=timezone.now() - dt.timedelta(seconds=1))
        assert queue.run_all()[expired.id].state == states.REVOKED
    assert not UniqueLock.objects.exists()


@pytest.mark.db
def test_a_retry_keeps_the_lock_until_the_last_attempt():
    with capture() as queue:
        first = unique_retries.delay(9)
        attempt = round_trip(queue.messages[-1])
        outcome = execute(attempt)
        record(attempt, outcome)  # the retry is enqueued (captured) with the same id and key
        assert outcome.state == states.RETRY
        assert UniqueLock.objects.get().task_id == first.id
        assert unique_retries.delay(9).id == first.id
        retry = round_trip(queue.messages[-1])
        assert (retry.id, retry.retries, retry.unique_key) == (first.id, 1, attempt.unique_key)
        outcome = execute(retry)
        record(retry, outcome)
    assert outcome.state == states.FAILURE
    assert Execution.objects.filter(task_id=first.id).count() == 2
    assert not UniqueLock.objects.exists()


@pytest.mark.db
def test_eager_mode_honours_the_lock(settings):
    held = sync_user.delay(6)  # queued: holds the key
    settings.TQ = {**settings.TQ, "ALWAYS_EAGER": True}
    assert sync_user.delay(6).id == held.id
    assert not Execution.objects.exists()
    ran = sync_user.delay(11)
    assert ran.get() == 11
    assert UniqueLock.objects.get().task_id == held.id  # 11's lock was released after its run


def _waiting_for_locks() -> int:
    """Return how many statements wait for a lock now (PostgreSQL; MySQL: on the lock table)."""
    sql = {
        "postgresql": "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'",
        "mysql": "SELECT count(*) FROM information_schema.processlist WHERE db = DATABASE()"
        " AND command = 'Query' AND info LIKE '%%django_tq_uniquelock%%'",
    }[connection.vendor]
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return int(cursor.fetchone()[0])


@pytest.mark.db
@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_enqueues_racing_in_concurrent_transactions_send_one_task(stale):
    """The first enqueue holds its transaction open until the others are blocked on its lock.

    Threads have their own connections. On SQLite, whose writers queue for the database, the
    others simply run after the first commits.
    """
    if stale:
        UniqueLock.objects.create(
            key=sync_user.unique_key_for((42,), {}),
            task_id="lost",
            expires_at=timezone.now() - dt.timedelta(seconds=1),
        )
    others = 5
    first_enqueued, commit = threading.Event(), threading.Event()
    ids: dict[str, list[str]] = {"first": [], "others": []}
    errors: list[BaseException] = []

    def enqueue(role: str) -> None:
        try:
            with transaction.atomic():
                ids[role].append(sync_user.delay(42).id)
                if role == "first":
                    first_enqueued.set()
                    commit.wait(20)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    first = threading.Thread(target=enqueue, args=("first",))
    first.start()
    assert first_enqueued.wait(20)
    threads = [threading.Thread(target=enqueue, args=("others",)) for _ in range(others)]
    for thread in threads:
        thread.start()
    if connection.vendor != "sqlite":
        wait_for(lambda: _waiting_for_locks() >= others, timeout=20, what="blocked enqueues")
    commit.set()
    for thread in [first, *threads]:
        thread.join(30)
    assert not errors
    assert ids["first"][0] != "lost"
    assert ids["others"] == ids["first"] * others
    assert QueueMessage.objects.count() == 1
    assert TaskResult.objects.count() == 1
    assert UniqueLock.objects.get().task_id == ids["first"][0]


@pytest.mark.db
def test_a_worker_runs_one_of_the_duplicates_then_frees_the_key(broker_url, start_worker):
    start_worker("-P", "prefork", "-c", "2")
    first = slow_sync.delay(1, 1.0)
    wait_for(lambda: Execution.objects.filter(label="slow-sync:1").exists(), what="task start")
    assert slow_sync.delay(1, 1.0).id == first.id  # STARTED still holds it
    assert first.get(timeout=20) == 1
    second = slow_sync.delay(1, 0.0)
    assert second.id != first.id
    assert second.get(timeout=20) == 1
    assert Execution.objects.filter(label="slow-sync:1").count() == 2
    wait_for(lambda: not UniqueLock.objects.exists(), what="the lock released")


@pytest.mark.db
def test_a_dead_lettered_message_frees_its_key(settings, start_worker):
    queue = settings.TQ.get("DEFAULT_QUEUE", "default")
    message = TaskMessage(
        id="dead-unique", task=sync_user.name, args=(1, 2, 3), queue=queue, unique_key="dead-key"
    )
    unique.acquire(message, using="default")
    wire = encode(message)
    get_broker().publish(wire, queue=queue, priority=None, not_before=None)
    start_worker("-P", "solo")
    wait_for(lambda: DeadLetter.objects.filter(task_id="dead-unique").exists(), what="dead letter")
    wait_for(lambda: not UniqueLock.objects.exists(), what="the lock released")
