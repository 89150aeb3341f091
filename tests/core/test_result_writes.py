"""What recording results costs at the defaults: statements per task, and nothing users see lost."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from django_tq import AsyncResult, signals, states
from django_tq.broker import get_broker
from django_tq.models import QueueMessage, TaskResult
from django_tq.result_backends import _row_fields, get_backend
from django_tq.testing import run_worker_until_empty
from django_tq.transport.database import Channel
from tests.conftest import REDIS_URL, require_service, wait_for
from tests.redis_commands import counting
from tests.testapp.tasks import add, slow_record, sync_user

pytestmark = pytest.mark.django_db(transaction=True)

WRITES = ("INSERT", "UPDATE", "DELETE", "WITH")
#: the final state's statement that also acks the message (django:// on PostgreSQL)
FOLDED = "WITH done AS (UPDATE"


def _writes(queries: list[dict[str, Any]]) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(WRITES)]


@pytest.fixture
def transport_acks(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Record the acks django:// makes apart from a final state (tags of each), sent at once or
    queued for its next claim."""
    sent: list[list[Any]] = []
    real = Channel.ack_leases

    def spy(channel: Channel, tags: Iterable[Any], owner_prefix: str | None = None) -> None:
        tags = list(tags)
        sent.append(tags)
        real(channel, tags, owner_prefix)

    monkeypatch.setattr(Channel, "ack_leases", spy)
    return sent


def _folds() -> bool:
    """Return whether the final state and the ack are one statement here (PostgreSQL)."""
    return connection.vendor == "postgresql" and get_broker().database_alias == "default"


def _run_five(transport_acks: list[list[Any]] | None = None) -> list[str]:
    results = [add.delay(n, 1) for n in range(5)]
    with CaptureQueriesContext(connection) as ctx:
        assert run_worker_until_empty() == 5
    writes = _writes(ctx.captured_queries)
    table = TaskResult._meta.db_table
    # Per task: STARTED (refusing a finished task in the same statement), then the final state.
    # The ack is in the final state's statement on PostgreSQL with django:// (``WITH done AS
    # (UPDATE …), acked AS (DELETE …)``: one round trip), else the transport's own statement on
    # its own connection. Nothing else is written and the task's row is never read on the way.
    assert len(writes) == 2 * 5, writes
    assert all(table in sql for sql in writes), writes
    folded = [sql for sql in writes if sql.startswith(FOLDED)]
    assert len(folded) == (5 if _folds() else 0), writes
    assert all(QueueMessage._meta.db_table in sql for sql in folded), folded
    if transport_acks is not None:
        assert len(transport_acks) == (0 if _folds() else 5), transport_acks
    reads = [q["sql"] for q in ctx.captured_queries if q["sql"] not in writes]
    assert not [sql for sql in reads if table in sql], reads
    assert [r.get(timeout=1) for r in results] == [1, 2, 3, 4, 5]
    return writes


def _without_flush(writes: list[str]) -> tuple[int, int]:
    """Return how many STARTED and final writes commit without waiting for the WAL flush."""
    skip = [sql for sql in writes if "set_config('synchronous_commit', 'off', true)" in sql]
    return len([s for s in skip if "= 'STARTED'" in s]), len(
        [s for s in skip if "= 'SUCCESS'" in s]
    )


@pytest.mark.db
def test_a_task_at_the_defaults_costs_two_result_writes_and_no_reads_of_its_row(
    transport_acks: list[list[Any]],
):
    writes = _run_five(transport_acks)
    assert not QueueMessage.objects.exists()
    if connection.vendor == "postgresql":
        # django:// on the results' alias: the final state is durable with the ack after it
        # (one WAL), so neither write waits for the flush.
        assert _without_flush(writes) == (5, 5)
    else:
        assert _without_flush(writes) == (0, 0)


@pytest.mark.db
def test_the_final_state_waits_for_the_flush_when_a_lost_worker_fails_the_task(settings: Any):
    # reject_on_worker_lost=False: a redelivery of a task still STARTED fails it instead of
    # running it again, so its final state must not be forgotten by a server crash.
    settings.TQ = {**settings.TQ, "REJECT_ON_WORKER_LOST": False}
    if connection.vendor != "postgresql":
        pytest.skip("commits wait for the flush everywhere but on PostgreSQL")
    assert _without_flush(_run_five()) == (5, 0)


@pytest.mark.db
def test_the_final_state_waits_for_the_flush_when_the_acks_do(settings: Any):
    if connection.vendor != "postgresql":
        pytest.skip("commits wait for the flush everywhere but on PostgreSQL")
    settings.TQ = {**settings.TQ, "BROKER_TRANSPORT_OPTIONS": {"synchronous_commit": True}}
    assert _without_flush(_run_five()) == (5, 0)


@pytest.mark.db
def test_the_final_state_waits_for_the_flush_when_the_ack_is_elsewhere(settings: Any):
    require_service("Redis", 6379)
    if connection.vendor != "postgresql":
        pytest.skip("commits wait for the flush everywhere but on PostgreSQL")
    settings.TQ = {**settings.TQ, "BROKER_URL": REDIS_URL, "DEFAULT_QUEUE": "tq-result-writes"}
    try:
        assert _without_flush(_run_five()) == (5, 0)
    finally:
        get_broker().purge(["tq-result-writes"])


@pytest.mark.db
def test_the_ack_goes_with_the_final_state_only_when_nothing_follows_it(
    transport_acks: list[list[Any]],
):
    # A chain step's success sends the next step after its final state is written: acked in
    # the same statement, a crash in between would lose the next step for good. So would a
    # unique key left held, or a retry never sent: those messages are acked on their own.
    chain = (add.s(1, 1) | add.s(10)).apply_async()
    unique = sync_user.delay(7, "once")
    assert run_worker_until_empty() == 3
    assert chain.get(timeout=1) == 12 and unique.get(timeout=1) == 7
    assert not QueueMessage.objects.exists()
    # the chain's first step and the unique task; the chain's last step has nothing after it
    assert len(transport_acks) == (2 if _folds() else 3), transport_acks


@pytest.mark.db
def test_a_second_copy_of_a_finished_task_is_refused_by_the_started_write():
    result = add.delay(2, 2)
    assert run_worker_until_empty() == 1
    done = TaskResult.objects.get(task_id=result.id)
    add.apply_async((2, 2), task_id=result.id)  # a copy of the same id (the row is kept)
    with CaptureQueriesContext(connection) as ctx:
        run_worker_until_empty()
    assert TaskResult.objects.get(task_id=result.id).date_done == done.date_done  # not run again
    assert len(_writes(ctx.captured_queries)) == 1  # the refused STARTED write, nothing else


@pytest.mark.db
def test_a_row_committed_between_the_started_write_and_its_check_is_started_not_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The QUEUED row of a message published before its producer committed: the STARTED UPDATE
    # finds no row, and the row is there (unfinished) a moment later. The task must run.
    result = add.delay(1, 1)
    backend = get_backend()
    message = add.build_message((1, 1), {}, {"task_id": result.id})
    real = type(backend)._update
    calls: list[int] = []

    def first_finds_nothing(self: Any, rows: Any, values: Any, **kwargs: Any) -> int:
        calls.append(1)
        return 0 if len(calls) == 1 else real(self, rows, values, **kwargs)

    monkeypatch.setattr(type(backend), "_update", first_finds_nothing)
    assert backend.mark_started(message, worker="w", delivery_count=1) is True
    assert TaskResult.objects.get(task_id=result.id).state == states.STARTED
    TaskResult.objects.filter(task_id=result.id).update(state=states.SUCCESS)
    calls.clear()
    assert backend.mark_started(message, worker="w", delivery_count=2) is False  # finished: refused


def test_started_is_visible_in_the_admin_and_rest_while_a_long_task_runs(
    admin_client: Any, start_worker: Any
):
    start_worker("-P", "prefork", "-c", "1")
    result = slow_record.delay(1.5, "long")
    wait_for(
        lambda: TaskResult.objects.filter(task_id=result.id, state=states.STARTED).exists(),
        what="STARTED",
    )
    assert admin_client.get(f"/api/tq/results/{result.id}/").json()["state"] == states.STARTED
    pk = TaskResult.objects.get(task_id=result.id).pk
    page = admin_client.get(f"/admin/django_tq/taskresult/{pk}/change/")
    assert page.status_code == 200 and b"STARTED" in page.content
    assert result.get(timeout=20) == "long"
    assert admin_client.get(f"/api/tq/results/{result.id}/").json()["state"] == states.SUCCESS


@pytest.fixture
def cache_results(settings: Any) -> Any:
    require_service("Redis", 6379)
    settings.TQ = {**settings.TQ, "RESULT_BACKEND": "django-cache://results"}
    yield
    from django.core.cache import caches

    caches["results"].clear()


def test_the_cache_backend_reads_only_to_refuse_a_finished_task(cache_results: Any):
    add.delay(0, 0)
    run_worker_until_empty()  # the STARTED script is loaded into Redis
    with counting() as enqueued:
        result = add.delay(20, 1)
    assert enqueued["GET"] == 0 and enqueued["SET"] == 1  # QUEUED: one write
    assert sum(enqueued.values()) == 1, enqueued
    assert AsyncResult(result.id).state == states.QUEUED
    queued = get_backend().get(result.id)
    assert queued is not None
    with counting() as ran:
        assert run_worker_until_empty() == 1
    # STARTED: one script call (it refuses a finished task and writes, no read on the client);
    # the final state: a write. Three round trips a task in all, enqueue included.
    assert ran["EVALSHA"] == 1 and ran["SET"] == 1 and ran["GET"] == 0, ran
    assert sum(ran.values()) == 2, ran
    assert AsyncResult(result.id).get(timeout=1) == 21
    done = get_backend().get(result.id)
    assert done is not None and done.state == states.SUCCESS
    assert done.date_created == queued.date_created and done.date_started is not None
    assert done.worker.startswith("tq-until-empty-") and done.delivery_count == 1
    add.apply_async((20, 1), task_id=result.id)  # a copy of the finished task: refused
    run_worker_until_empty()
    assert get_backend().get(result.id) == done


@pytest.mark.db
def test_the_queued_row_waits_for_no_flush_of_its_own_before_the_django_message_row(settings: Any):
    # Enqueue at the defaults: the QUEUED row, then the message row, two statements. On
    # PostgreSQL with django:// on the results' alias the message row's durable commit, right
    # after on the same WAL, flushes the QUEUED row too: one flush per call, not two.
    if connection.vendor != "postgresql":
        pytest.skip("commits wait for the flush everywhere but on PostgreSQL")
    with CaptureQueriesContext(connection) as ctx:
        result = add.delay(1, 2)
        with transaction.atomic():  # in a transaction: one commit anyway, nothing to skip
            add.delay(3, 4)
    writes = _writes(ctx.captured_queries)
    skipped = [sql for sql in writes if "set_config('synchronous_commit', 'off', true)" in sql]
    assert len(writes) == 4, writes
    assert len(skipped) == 1 and TaskResult._meta.db_table in skipped[0], writes
    assert QueueMessage._meta.db_table not in skipped[0]
    assert TaskResult.objects.get(task_id=result.id).state == states.QUEUED
    assert QueueMessage.objects.count() == 2
    settings.TQ = {**settings.TQ, "BROKER_URL": REDIS_URL, "DEFAULT_QUEUE": "tq-result-writes"}
    require_service("Redis", 6379)
    try:
        with CaptureQueriesContext(connection) as ctx:
            # The message goes to Redis. The worker's STARTED rebuilds a lost QUEUED row from
            # the message, so the row need not wait for a flush of its own; but an owner is in
            # no message, so an owned task's row waits for its flush.
            add.delay(5, 6)
            add.apply_async((5, 6), owner=7)
        writes = _writes(ctx.captured_queries)
        assert len(writes) == 2, writes
        assert "set_config('synchronous_commit', 'off', true)" in writes[0], writes
        assert "set_config" not in writes[1], writes
    finally:
        get_broker().purge(["tq-result-writes"])


@pytest.mark.db
def test_a_lost_queued_row_is_rebuilt_by_the_started_write(settings: Any) -> None:
    # What a PostgreSQL server crash can forget of a QUEUED row that skipped its flush (the
    # message in Redis or RabbitMQ): the worker's STARTED write creates the row from the message.
    require_service("Redis", 6379)
    settings.TQ = {**settings.TQ, "BROKER_URL": REDIS_URL, "DEFAULT_QUEUE": "tq-result-writes"}
    try:
        result = add.apply_async((2, 3), priority=4, group_id="g-rebuilt")
        queued = TaskResult.objects.get(task_id=result.id)
        TaskResult.objects.filter(task_id=result.id).delete()  # as the crash leaves it
        assert AsyncResult(result.id).state == states.PENDING
        assert run_worker_until_empty() == 1
        assert result.get(timeout=1) == 5
        rebuilt = TaskResult.objects.get(task_id=result.id)
        same = ("task_name", "args", "kwargs", "queue", "priority", "group_id", "root_id", "eta")
        assert [getattr(rebuilt, f) for f in same] == [getattr(queued, f) for f in same]
        assert rebuilt.state == states.SUCCESS and rebuilt.date_started is not None
    finally:
        get_broker().purge(["tq-result-writes"])


@pytest.fixture
def health_checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Connections as a worker has them (``CONN_HEALTH_CHECKS``); yield the aliases checked."""
    checked: list[str] = []
    wrapper = type(connections["default"])
    real = wrapper.is_usable

    def is_usable(self: Any) -> bool:
        checked.append(self.alias)
        return bool(real(self))

    monkeypatch.setattr(wrapper, "is_usable", is_usable)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(CONN_HEALTH_CHECKS=True, CONN_MAX_AGE=600)
    yield checked
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(saved)


@pytest.mark.db
def test_tasks_in_a_row_skip_the_health_check_of_the_queue_s_database(health_checked: list[str]):
    # django://: a task that follows another within a second trusts the connection the last one
    # used without an error; CONN_HEALTH_CHECKS would add a SELECT 1 round trip to each task.
    if connection.vendor != "postgresql":
        pytest.skip("the health check is a round trip that matters on PostgreSQL")
    results = [add.delay(n, 1) for n in range(10)]
    assert run_worker_until_empty() == 10
    # enqueueing, subscribing and the first task check; the nine after it do not
    assert len(health_checked) <= 3, health_checked
    assert [r.get(timeout=1) for r in results] == list(range(1, 11))


@pytest.mark.db
def test_a_connection_the_server_closed_between_two_tasks_is_reopened(
    health_checked: list[str], monkeypatch: pytest.MonkeyPatch
):
    # The second task meets the closed connection without a health check: its STARTED write
    # fails with the broker's connection error, the consumer reconnects, the task runs once.
    if connection.vendor != "postgresql":
        pytest.skip("a connection the server closed is reproduced with psycopg here")
    first, second = add.delay(1, 1), add.delay(2, 2)
    closed: list[str] = []

    def close_after_the_first(sender: Any, task_id: str, **kwargs: Any) -> None:
        if task_id == first.id and not closed:
            closed.append(task_id)
            connection.connection.close()  # as a database restart leaves it: closed under us

    signals.task_finished.connect(close_after_the_first)
    try:
        assert run_worker_until_empty() == 2
    finally:
        signals.task_finished.disconnect(close_after_the_first)
    assert closed == [first.id]
    assert (first.get(timeout=1), second.get(timeout=1)) == (2, 4)
    assert TaskResult.objects.get(task_id=second.id).delivery_count >= 1
    assert not QueueMessage.objects.exists()


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the ORM's INSERT and UPDATE compilations of ``TaskResult`` statements."""
    from django.db.models.sql.compiler import SQLInsertCompiler, SQLUpdateCompiler

    built: list[str] = []
    for compiler in (SQLInsertCompiler, SQLUpdateCompiler):
        real = compiler.as_sql

        def as_sql(self: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            if self.query.model is TaskResult:
                built.append(type(self).__name__)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(compiler, "as_sql", as_sql)
    return built


@pytest.mark.db
def test_the_hot_result_writes_are_not_compiled_by_the_orm_for_each_task(compiled: list[str]):
    # The QUEUED INSERT, STARTED and the final state (folded with the ack on PostgreSQL) are
    # SQL built once per process and connection vendor: only values are bound per task.
    _run_five()
    assert compiled == [], compiled


def _columns(row: TaskResult) -> dict[str, Any]:
    skip = {"id", "date_created", "date_started", "date_done", "worker"}
    return {f.attname: getattr(row, f.attname) for f in TaskResult._meta.concrete_fields} | {
        name: None for name in skip
    }


@pytest.mark.db
@pytest.mark.parametrize("use_tz", [True, False])
def test_the_prebuilt_writes_store_what_the_orm_would(settings: Any, use_tz: bool) -> None:
    import datetime as dt

    from django.contrib.auth.models import User
    from django.utils import timezone

    settings.USE_TZ = use_tz
    owner = User.objects.create(username=f"owner-{use_tz}")
    # a message's eta is aware (UTC); without USE_TZ only SQLite and MySQL refuse it (as the ORM)
    eta = timezone.now() + dt.timedelta(hours=1) if use_tz else None
    backend = get_backend()
    args = ([1, "two", {"three": [3.0, None]}], {"k": "ü ' \" %s"})
    options = {"eta": eta, "priority": 3} if eta else {"priority": 3}
    message = add.build_message(args, {"x": None}, options)
    backend.mark_queued(message, owner_id=owner.pk)
    ours = TaskResult.objects.get(task_id=message.id)
    twin = add.build_message(args, {"x": None}, options)
    TaskResult.objects.create(  # the ORM's row for the same message (its own id)
        **_row_fields(twin), owner_id=owner.pk, state=states.QUEUED
    )
    orm = TaskResult.objects.get(task_id=twin.id)
    ids = {"task_id": "", "root_id": ""}
    assert _columns(ours) | ids == _columns(orm) | ids
    assert ours.eta == eta and ours.date_created is not None
    assert timezone.is_aware(ours.date_created) is use_tz
    # a second QUEUED of a known id keeps the row; STARTED, then the final state, fenced
    backend.mark_queued(message, owner_id=None)
    assert TaskResult.objects.get(task_id=message.id).owner_id == owner.pk
    assert backend.mark_started(message, worker="w1", delivery_count=2) is True
    started = TaskResult.objects.get(task_id=message.id)
    assert (started.state, started.worker, started.delivery_count) == (states.STARTED, "w1", 2)
    assert started.date_started is not None and started.date_done is None
    backend.store(
        message,
        states.SUCCESS,
        result={"r": [1, None, "x"]},
        worker="w1",
        delivery_count=2,
        fenced=True,
    )
    done = TaskResult.objects.get(task_id=message.id)
    assert (done.state, done.result, done.meta, done.traceback) == (
        states.SUCCESS,
        {"r": [1, None, "x"]},
        None,
        "",
    )
    assert done.date_done is not None and done.date_done >= started.date_started
    assert TaskResult.objects.filter(task_id=message.id, meta__isnull=True).exists()  # SQL NULL
    # a finished task: STARTED refuses it, a stale delivery's outcome is superseded
    assert backend.mark_started(message, worker="w2", delivery_count=3) is False
    from django_tq.exceptions import Superseded

    with pytest.raises(Superseded):
        backend.store(message, states.FAILURE, delivery_count=1, fenced=True)
    assert TaskResult.objects.get(task_id=message.id).state == states.SUCCESS


@pytest.mark.db
def test_a_burst_of_queued_rows_is_one_insert_and_keeps_known_ids() -> None:
    backend = get_backend()
    messages = [add.build_message((n, n), {}, {}) for n in range(3)]
    backend.mark_queued(messages[0])
    with CaptureQueriesContext(connection) as ctx:
        backend.mark_queued_many([(m, None) for m in messages])
    assert len(_writes(ctx.captured_queries)) == 1
    rows = TaskResult.objects.filter(task_id__in=[m.id for m in messages])
    assert sorted(r.args for r in rows) == [[0, 0], [1, 1], [2, 2]]
    assert {r.state for r in rows} == {states.QUEUED}


@pytest.mark.db
def test_a_prebuilt_write_that_fails_in_a_transaction_marks_it_for_rollback() -> None:
    # As with QuerySet.update: an error caught inside the caller's atomic block leaves the
    # transaction marked for rollback rather than half-done.
    from django.db import DatabaseError

    if connection.vendor == "sqlite":
        pytest.skip("SQLite does not enforce a column's length")
    backend = get_backend()
    result = add.delay(1, 1)
    message = add.build_message((1, 1), {}, {"task_id": result.id})
    with transaction.atomic():
        with pytest.raises(DatabaseError):
            backend.store(message, "X" * 60)  # longer than the state column
        assert connection.needs_rollback
    assert TaskResult.objects.get(task_id=result.id).state == states.QUEUED
