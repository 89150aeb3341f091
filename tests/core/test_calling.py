from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import transaction
from django.test import TestCase
from django.utils import timezone

from django_tq import AsyncResult, send_task, states
from django_tq.enqueue import is_waiting_for_commit
from django_tq.exceptions import PayloadTooLarge, PublishError, QueueNotFound, TaskError
from django_tq.models import QueueMessage, TaskResult
from django_tq.testing import capture
from tests.testapp.tasks import (
    add,
    echo_types,
    fail,
    order_exists,
    record,
    returns_unserialisable,
    who_am_i,
)


@pytest.mark.django_db
def test_non_json_arguments_raise_at_the_call_site():
    with pytest.raises(TypeError, match="not JSON serializable"):
        add.delay({1, 2}, 3)
    assert not QueueMessage.objects.exists()
    assert not TaskResult.objects.exists()


@pytest.mark.django_db
def test_oversize_payload_is_refused(settings):
    settings.TQ = {**settings.TQ, "MAX_PAYLOAD_BYTES": 2048}
    with pytest.raises(PayloadTooLarge, match="MAX_PAYLOAD_BYTES"):
        record.delay("x" * 4096)
    assert not QueueMessage.objects.exists()


@pytest.mark.django_db
def test_apply_async_options_reach_the_message():
    eta = timezone.now() + dt.timedelta(seconds=20)  # within ETA_HORIZON_SECONDS: not parked
    result = record.apply_async(
        ("a",),
        queue="special",
        priority=3,
        eta=eta,
        expires=600,
        task_id="fixed-id",
        headers={"k": "v"},
    )
    assert result.id == "fixed-id"
    row = TaskResult.objects.get(task_id="fixed-id")
    assert (row.queue, row.eta, row.state) == ("special", eta, states.QUEUED)
    assert row.expires > eta
    message = QueueMessage.objects.get()
    assert message.queue == "special" and message.priority == 3 and message.not_before == eta


@pytest.mark.django_db
def test_naive_eta_is_read_in_time_zone(settings):
    settings.TIME_ZONE = "Europe/Paris"
    result = record.apply_async(("a",), eta=dt.datetime(2030, 7, 1, 12, 0))
    assert TaskResult.objects.get(task_id=result.id).eta == dt.datetime(
        2030, 7, 1, 10, 0, tzinfo=dt.UTC
    )


def test_priority_outside_zero_to_nine_is_refused():
    with pytest.raises(ValueError, match="0-9"):
        add.apply_async((1, 2), priority=10)


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_django_transport_writes_the_message_inside_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        add.delay(1, 2)
        assert (
            QueueMessage.objects.count() == 1
        )  # written by the caller's connection, in its transaction
        raise RuntimeError
    assert QueueMessage.objects.count() == 0
    with transaction.atomic():
        add.delay(1, 2)
    assert QueueMessage.objects.count() == 1


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("url", ["memory://", "django://"])
def test_get_inside_the_publishing_transaction_raises_instead_of_hanging(settings, url):
    settings.TQ = {**settings.TQ, "BROKER_URL": url}
    with transaction.atomic():
        result = add.delay(1, 2)
        with pytest.raises(RuntimeError, match="commits"):
            result.get()  # no timeout: without the guard this would wait forever


def _waiting_publish(case: str, alias: str) -> tuple[dict, dict]:
    """Return the TQ changes and apply_async options that make ``case``'s publish wait."""
    # On SQLite ``other`` shares the default's file and writer: the QUEUED row, written on
    # ``default``, would wait for the open transaction on ``other``. The check needs no row.
    tracking = {"TRACK_ENQUEUED": alias == "default"}
    if case == "message row":  # the django:// queue on the caller's alias
        url = "django://" if alias == "default" else f"django://?alias={alias}"
        return {"BROKER_URL": url, **tracking}, {}
    if case == "parked row":  # an ETA beyond ETA_HORIZON_SECONDS
        return {"BROKER_URL": "django://", **tracking}, {"countdown": 3600}
    if case == "outbox row":
        return {"BROKER_URL": "memory://", "OUTBOX": True, **tracking}, {}
    return {"BROKER_URL": "memory://", **tracking}, {}  # an on-commit callback


@pytest.mark.db
@pytest.mark.django_db(transaction=True, databases=["default", "other"])
@pytest.mark.parametrize("alias", ["default", "other"])
@pytest.mark.parametrize("case", ["message row", "parked row", "outbox row", "on-commit callback"])
def test_get_on_a_publish_waiting_for_commit_raises_on_every_alias(settings, case, alias):
    changes, options = _waiting_publish(case, alias)
    settings.TQ = {**settings.TQ, **changes}
    with transaction.atomic(using=alias):
        result = add.apply_async((1, 2), using=alias, **options)
        assert is_waiting_for_commit(result.id)
        assert not is_waiting_for_commit("another-task")
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="published when the current transaction commits"):
            result.get(timeout=10)
        assert time.monotonic() - started < 2  # at once, not after the timeout
    assert not is_waiting_for_commit(result.id)
    with pytest.raises(TimeoutError):  # committed: now it only waits for a worker
        result.get(timeout=0.2)


@pytest.mark.db
@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_a_publish_on_an_alias_without_a_transaction_does_not_wait(settings):
    settings.TQ = {**settings.TQ, "BROKER_URL": "memory://", "TRACK_ENQUEUED": False}
    with transaction.atomic(using="default"):
        result = add.apply_async((1, 2), using="other")  # published at once
        assert not is_waiting_for_commit(result.id)
        with pytest.raises(TimeoutError):
            result.get(timeout=0.2)


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_delay_on_commit_waits_for_the_commit_even_when_the_setting_is_off(settings):
    settings.TQ = {**settings.TQ, "BROKER_URL": "memory://", "PUBLISH_ON_COMMIT": False}
    with capture() as queue:
        with transaction.atomic():
            add.delay(1, 1)
            add.delay_on_commit(2, 2)
            assert [m.args for m in queue.messages] == [
                (1, 1),
                (2, 2),
            ]  # (2, 2) waits for the commit
            assert len(queue._published) == 1
        assert len(queue._published) == 2


@pytest.mark.django_db(transaction=True)
def test_unreachable_broker_raises_publish_error_in_bounded_time(settings):
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
        "BROKER_CONNECTION_TIMEOUT": 1,
    }
    started = time.monotonic()
    with pytest.raises(PublishError, match=r"127\.0\.0\.1:1"):
        add.delay(1, 2)
    assert time.monotonic() - started < 5
    # Outside a transaction the result row says what happened.
    assert TaskResult.objects.get().state == states.FAILURE


@pytest.mark.django_db(transaction=True)
def test_retry_and_retry_policy_say_how_long_a_publish_tries(settings):
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
        "BROKER_CONNECTION_TIMEOUT": 10,
    }
    timings = {}
    for name, options in {
        "default": {"retry_policy": {"timeout": 1.5}},  # tries until the timeout
        "once": {"retry": False},
        "patient": {"retry_policy": {"max_retries": 4, "interval_start": 0.3, "interval_step": 0}},
    }.items():
        started = time.monotonic()
        with pytest.raises(PublishError):
            add.apply_async((1, 2), **options)
        timings[name] = time.monotonic() - started
    assert 1.5 <= timings["default"] < 5
    assert 1.2 <= timings["patient"] < 5  # four waits of 0.3 s, well within the 10 s timeout
    assert timings["once"] < 1.0  # one refused connection, no wait
    with pytest.raises(TypeError, match="retry_errors"):
        add.apply_async((1, 2), retry_policy={"retry_errors": None})


@pytest.mark.django_db
def test_send_task_by_name_without_importing():
    result = send_task("tests.testapp.tasks.add", (1, 2))
    assert TaskResult.objects.get(task_id=result.id).task_name == "tests.testapp.tasks.add"
    unknown = send_task("somewhere.else.task", kwargs={"a": 1}, queue="elsewhere")
    assert TaskResult.objects.get(task_id=unknown.id).queue == "elsewhere"


@pytest.mark.django_db
def test_eager_mode_runs_through_serialization(settings):
    settings.TQ = {**settings.TQ, "ALWAYS_EAGER": True}
    assert add.delay(2, 3).get() == 5
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert echo_types.delay({"m": moment, "d": dt.date(2026, 1, 1)}).get() == {
        "m": "datetime",
        "d": "date",
    }
    with pytest.raises(TypeError):
        add.delay(object(), 1)
    with pytest.raises(ValueError, match="boom"):
        fail.delay()
    assert who_am_i.delay().get()["id"]


@pytest.mark.django_db
def test_apply_returns_an_eager_result(settings):
    settings.TQ = {**settings.TQ, "EAGER_PROPAGATES": False}
    eager = add.apply((4, 5))
    assert eager.get() == 9 and eager.state == states.SUCCESS
    failed = fail.apply(("nope",))
    assert failed.state == states.FAILURE
    assert isinstance(failed.get(propagate=False), ValueError)


@pytest.mark.db
class CaptureInTestCase(TestCase):
    def test_on_commit_enqueues_are_seen_and_rollbacks_are_not(self):
        with capture() as queue:
            with transaction.atomic():
                add.delay(1, 2)
            try:
                with transaction.atomic():
                    add.delay(100, 200)
                    raise RuntimeError
            except RuntimeError:
                pass
            transaction.on_commit(lambda: record.delay("via on_commit"))
        queue.assert_enqueued(add, args=(1, 2), count=1)
        queue.assert_not_enqueued(add, args=(100, 200))
        self.assertEqual(
            len(queue), 1
        )  # the explicit on_commit never ran: TestCase does not commit

    def test_run_all_runs_through_the_worker_path(self):
        with capture() as queue:
            result = add.delay(2, 2)
            fail_result = fail.delay("bad")
        outcomes = queue.run_all()
        self.assertEqual(outcomes[result.id].state, states.SUCCESS)
        self.assertEqual(AsyncResult(result.id).get(timeout=1), 4)
        self.assertEqual(AsyncResult(fail_result.id).state, states.FAILURE)
        with self.assertRaises(ValueError):
            AsyncResult(fail_result.id).get(timeout=1)

    def test_capture_round_trips_serialization(self):
        with capture(), self.assertRaises(TypeError):
            add.delay(object(), 1)


@pytest.mark.django_db
def test_failures_are_rebuilt_by_get_and_unserialisable_returns_fail():
    with capture() as queue:
        failing = fail.delay("broken")
        weird = returns_unserialisable.delay()
    queue.run_all()
    with pytest.raises(ValueError, match="broken"):
        failing.get(timeout=1)
    assert "Traceback" in failing.traceback
    assert weird.state == states.FAILURE
    error = weird.get(timeout=1, propagate=False)
    assert "not JSON serializable" in str(error)


@pytest.mark.django_db
def test_get_inside_a_task_raises(tq_capture):
    from django_tq.context import Request, current_request

    token = current_request.set(Request(id="x", task="t", called_directly=False))
    try:
        with pytest.raises(RuntimeError, match="within a task"):
            AsyncResult("anything").get(timeout=0.1)
    finally:
        current_request.reset(token)


@pytest.mark.db
@pytest.mark.django_db
def test_forget_and_unknown_ids():
    with capture() as queue:
        result = add.delay(1, 1)
    queue.run_all()
    assert result.get(timeout=1) == 2
    result.forget()
    assert AsyncResult(result.id).state == states.PENDING


def test_task_error_is_raised_for_unsafe_exception_types(db):
    TaskResult.objects.create(
        task_id="t1",
        task_name="x",
        state=states.FAILURE,
        result={"exc_type": "not.imported.Error", "exc_message": "hidden", "exc_args": ["hidden"]},
    )
    with pytest.raises(TaskError, match=r"not\.imported\.Error: hidden"):
        AsyncResult("t1").get(timeout=1)


@pytest.mark.db
@pytest.mark.django_db
def test_delay_on_commit_and_on_commit_lambda(django_capture_on_commit_callbacks):
    with capture() as queue, django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        order_exists.delay_on_commit("n1")
        transaction.on_commit(lambda: order_exists.delay("n2"))
    assert [m.args for m in queue.filter(order_exists)] == [("n1",), ("n2",)]


@pytest.mark.django_db
def test_routing_precedence_is_call_then_task_then_routes(settings):
    from tests.testapp.tasks import on_other_queue

    settings.TQ = {
        **settings.TQ,
        "TASK_ROUTES": {"tests.testapp.tasks.*": {"queue": "routed", "priority": 4}},
    }
    with capture() as queue:
        add.delay(1, 1)  # no queue of its own: the route applies
        on_other_queue.delay()  # @task(queue="other") wins over the route
        add.apply_async((1, 1), queue="explicit", priority=8)  # call options win over everything
    assert [(m.queue, m.priority) for m in queue.messages] == [
        ("routed", 4),
        ("other", 4),
        ("explicit", 8),
    ]


@pytest.mark.django_db
def test_routing_key_names_the_queue(settings):
    settings.TQ = {
        **settings.TQ,
        "TASK_ROUTES": {"tests.testapp.tasks.add": {"routing_key": "by-key"}},
    }
    with capture() as queue:
        add.delay(1, 1)
        record.apply_async(("x",), routing_key="explicit-key")
        record.apply_async(("y",), routing_key="same", queue="same")
    assert [m.queue for m in queue.messages] == ["by-key", "explicit-key", "same"]
    # a key no declared queue is bound with names a queue only when no other queue is named
    with pytest.raises(QueueNotFound, match="reaches no queue declared"):
        record.apply_async(("z",), routing_key="a", queue="b")


def test_a_task_routing_key_names_its_queue() -> None:
    from django_tq import task

    @task(name="tests.routing_key_task", routing_key="reports")
    def routed() -> None: ...

    try:
        assert routed.build_message((), {}, {}).queue == "reports"
        assert routed.build_message((), {}, {"queue": "other"}).queue == "other"
    finally:
        from django_tq.registry import registry

        registry.unregister("tests.routing_key_task")
