"""The django:// transport's leases, on whichever database the suite runs against."""

from __future__ import annotations

import os
import threading
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from django_tq.broker import Broker
from django_tq.broker.delivery import Delivery
from django_tq.message import TaskMessage, encode
from django_tq.models import QueueMessage
from django_tq.transport import pooling

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


def _broker(lease_seconds: float = 30, **options: float) -> Broker:
    return Broker(
        "django://",
        transport_options={"lease_seconds": lease_seconds, "polling_interval": 0.01, **options},
    )


def _send(broker: Broker, queue: str, label: str, priority: int | None = None) -> None:
    wire = encode(
        TaskMessage(id=label, task="tests.testapp.tasks.record", args=(label,), queue=queue)
    )
    broker.publish(wire, queue=queue, priority=priority)


def _collect(broker: Broker, queue: str, prefetch: int = 10, rounds: int = 5):
    received: list[Delivery] = []
    subscription = broker.subscribe([queue], prefetch=prefetch, on_delivery=received.append)
    for _ in range(rounds):
        subscription.drain(0.05)
    return subscription, received


def test_claim_leases_and_ack_deletes(queue_name):
    broker = _broker()
    for i in range(3):
        _send(broker, queue_name, f"m{i}")
    subscription, received = _collect(broker, queue_name)
    assert [d.headers["id"] for d in received] == ["m0", "m1", "m2"]
    assert all(d.delivery_count == 1 for d in received)
    assert QueueMessage.objects.filter(lease_owner__isnull=False).count() == 3
    for delivery in received:
        delivery.ack()
    subscription.channel.flush_acks()  # acks are batched (see the tests of batched acks below)
    assert QueueMessage.objects.count() == 0
    subscription.close()


def test_priority_then_fifo(queue_name):
    broker = _broker()
    _send(broker, queue_name, "low-1", 0)
    _send(broker, queue_name, "high", 9)
    _send(broker, queue_name, "low-2", 0)
    _send(broker, queue_name, "mid", 5)
    subscription, received = _collect(broker, queue_name)
    assert [d.headers["id"] for d in received] == ["high", "mid", "low-1", "low-2"]
    subscription.close()


def test_expired_lease_is_redelivered_and_counted(queue_name):
    # A lease longer than a first collection takes on a loaded machine (xdist, legs side by side)
    broker = _broker(lease_seconds=1.5)
    _send(broker, queue_name, "lost")
    first, received = _collect(broker, queue_name)
    assert len(received) == 1
    time.sleep(1.7)  # the first consumer stays silent, as if it had died: no release, no renewal
    second, again = _collect(broker, queue_name)
    assert [d.delivery_count for d in again] == [2]
    again[0].ack()
    second.close()
    first.close()


def test_a_late_ack_from_a_holder_whose_lease_was_taken_over_is_fenced(queue_name):
    broker = _broker(lease_seconds=1.5)
    _send(broker, queue_name, "partitioned")
    first, (stale,) = _collect(broker, queue_name)
    time.sleep(1.7)  # the first holder is cut off: no renewal, no ack
    second, (current,) = _collect(broker, queue_name)
    stale.ack()  # it comes back and acks late: the message is the second holder's now
    first.channel.flush_acks()
    assert QueueMessage.objects.filter(lease_owner=second.channel.owner).count() == 1
    current.ack()
    second.channel.flush_acks()
    assert QueueMessage.objects.count() == 0
    second.close()
    first.close()


def test_renewed_lease_is_not_redelivered(queue_name):
    # A lease longer than a first collection takes on a loaded machine; four renewals outlast it
    broker = _broker(lease_seconds=1.5)
    _send(broker, queue_name, "long")
    holder, received = _collect(broker, queue_name)
    assert len(received) == 1
    for _ in range(4):
        time.sleep(0.5)
        assert holder.renew_leases() == 1
    other, stolen = _collect(broker, queue_name)
    assert stolen == []
    received[0].ack()
    holder.close()
    other.close()


def test_requeue_and_close_release_at_once(queue_name):
    broker = _broker()
    for i in range(4):
        _send(broker, queue_name, f"r{i}")
    subscription, received = _collect(broker, queue_name, prefetch=4, rounds=1)
    assert len(received) == 1  # the other three wait, leased, in the local buffer
    assert QueueMessage.objects.filter(lease_owner__isnull=False).count() == 4
    received[0].requeue()
    subscription.close()  # gives back the buffered three without counting a delivery
    assert QueueMessage.objects.filter(lease_owner__isnull=False).count() == 0
    counts = dict(QueueMessage.objects.values_list("payload", "delivery_count").order_by("id"))
    assert sorted(counts.values()) == [0, 0, 0, 1]


def test_dead_process_leases_are_released_by_pid(queue_name):
    broker = _broker()
    _send(broker, queue_name, "orphan")
    _send(broker, queue_name, "prefetched")
    subscription, received = _collect(broker, queue_name, rounds=1)
    running = received[0]
    assert broker.release_leases_of(12345678) == 0
    assert broker.release_leases_of(os.getpid(), running=[running.tag]) == 2
    assert not QueueMessage.objects.filter(lease_owner__isnull=False).exists()
    # The running message may have run: its delivery counts. The prefetched one never started.
    counts = sorted(QueueMessage.objects.values_list("delivery_count", flat=True))
    assert counts == [0, 1]
    subscription.close()


def test_not_before_is_respected(queue_name):
    from django.utils import timezone

    broker = _broker()
    wire = encode(TaskMessage(id="later", task="t", queue=queue_name))
    # Far enough ahead that the first collection ends before it, even on a loaded machine
    later = (timezone.now() + timezone.timedelta(seconds=1.5)).isoformat()
    broker.publish(wire, queue=queue_name, not_before=later)
    subscription, received = _collect(broker, queue_name, rounds=2)
    assert received == []
    time.sleep(1.6)
    subscription.drain(0.05)
    assert [d.headers["id"] for d in received] == ["later"]
    subscription.close()


def test_idle_consumer_wakes_on_publish(queue_name):
    """On PostgreSQL the wait is LISTEN/NOTIFY; elsewhere a short poll. Either wakes well before the timeout."""
    broker = _broker()
    received: list[Delivery] = []
    subscription = broker.subscribe([queue_name], prefetch=1, on_delivery=received.append)
    subscription.drain(0.05)  # LISTEN is issued on the first idle wait
    timer = threading.Timer(0.2, lambda: (_send(broker, queue_name, "wake"), connection.close()))
    timer.start()
    started = time.monotonic()
    subscription.drain(10)
    timer.join()
    assert [d.headers["id"] for d in received] == ["wake"]
    assert time.monotonic() - started < 5
    subscription.close()


def test_text_bodies_are_stored_as_text_and_binary_ones_survive(queue_name):
    broker = _broker()
    text = encode(TaskMessage(id="text", task="t", args=("é",), queue=queue_name))
    binary = encode(
        TaskMessage(id="binary", task="t", args=(1,), queue=queue_name, serializer="pickle")
    )
    broker.publish(text, queue=queue_name)
    broker.publish(binary, queue=queue_name)
    stored = list(QueueMessage.objects.order_by("id").values_list("payload", flat=True))
    assert '"body": "{\\"args\\":[\\"\\u00e9\\"]' in stored[0]  # JSON text, not base64
    subscription, received = _collect(broker, queue_name)
    bodies = {d.headers["id"]: d.body for d in received}
    assert bodies["text"] in (text.body, text.body.encode())
    assert bodies["binary"] == binary.body
    subscription.close()


def test_consumer_connection_does_not_wait_for_the_wal_flush_on_postgresql(queue_name):
    broker = _broker()
    subscription = broker.subscribe([queue_name], prefetch=1, on_delivery=lambda d: None)
    db = subscription.channel.consumer_db
    if db.vendor != "postgresql":
        subscription.close()
        pytest.skip("a PostgreSQL setting")
    with db.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "off"
    with connection.cursor() as cursor:  # the caller's connection keeps the server's setting
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    subscription.close()


def test_consumer_connection_waits_for_the_sqlite_write_lock_whatever_options_say(
    queue_name, monkeypatch
):
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite setting")
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {})  # startproject's settings
    broker = _broker()
    _send(broker, queue_name, "m0")
    subscription, received = _collect(broker, queue_name)
    db = subscription.channel.consumer_db
    assert db.settings_dict["OPTIONS"] == {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    assert db.transaction_mode == "IMMEDIATE"
    with db.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 20_000
    assert connection.settings_dict["OPTIONS"] == {}  # the alias's own settings are left alone
    assert [d.headers["id"] for d in received] == ["m0"]
    received[0].ack()
    subscription.close()


# -- behind a transaction pooler (PgBouncer itself: tests/faults/test_pgbouncer.py) ------------------
def test_the_transaction_pooling_option_reads_true_false_and_auto():
    assert [pooling.flag(v) for v in (True, "1", "yes", False, "off", None, "auto")] == [
        True,
        True,
        True,
        False,
        False,
        None,
        None,
    ]
    with pytest.raises(ImproperlyConfigured, match="transaction_pooling"):
        pooling.flag("sometimes")
    assert (
        pooling.local_settings(["SET a = off", "SET b = 1"])
        == "SET LOCAL a = off; SET LOCAL b = 1; "
    )


def test_a_pooled_consumer_claims_with_per_statement_settings_on_postgresql(queue_name):
    broker = Broker(
        "django://",
        transport_options={"transaction_pooling": True, "polling_interval": 0.01},
    )
    for i in range(3):
        _send(broker, queue_name, f"p{i}")
    subscription, received = _collect(broker, queue_name)
    channel = subscription.channel
    db = channel.consumer_db
    if db.vendor != "postgresql":
        subscription.close()
        pytest.skip("a PostgreSQL setting")
    assert channel.is_pooled
    assert [d.headers["id"] for d in received] == ["p0", "p1", "p2"]
    assert channel._execute("SELECT current_setting('enable_sort')") == [("off",)]  # in statement
    with db.cursor() as cursor:  # and gone after it: nothing stays on the session
        cursor.execute(
            "SELECT current_setting('enable_sort'), current_setting('synchronous_commit')"
        )
        assert cursor.fetchone() == ("on", "on")
    for delivery in received:
        delivery.ack()
    subscription.drain(0.05)  # the queued acks travel with the next (empty) claim, pooled too
    assert not QueueMessage.objects.filter(queue=queue_name).exists()
    subscription.close()


def test_a_direct_postgresql_connection_is_found_unpooled(queue_name):
    subscription = _broker().subscribe([queue_name], prefetch=1, on_delivery=lambda d: None)
    db = subscription.channel.consumer_db
    if db.vendor != "postgresql":
        subscription.close()
        pytest.skip("a PostgreSQL setting")
    assert subscription.channel.is_pooled is False  # the probe heard its NOTIFY: LISTEN works
    subscription.close()


def _prepared_claims(channel) -> list[str]:
    """Return the claim statements prepared on the channel's own session."""
    return [
        text
        for (text,) in channel._execute("SELECT statement FROM pg_prepared_statements")
        if "SKIP LOCKED" in text
    ]


def test_a_direct_postgresql_consumer_claims_with_prepared_statements(queue_name):
    broker = _broker(ack_batch_seconds=30)
    for i in range(3):
        _send(broker, queue_name, f"s{i}")
    subscription, received = _collect(broker, queue_name, prefetch=1, rounds=1)
    channel = subscription.channel
    if channel.consumer_db.vendor != "postgresql":
        subscription.close()
        pytest.skip("a PostgreSQL setting")
    for _ in range(4):  # each claim carries the last one's ack (the other statement text)
        for delivery in received:
            delivery.ack()
        received.clear()
        subscription.drain(0.05)
    prepared = _prepared_claims(channel)
    assert len(prepared) == 2, prepared  # with and without folded acks, whatever the values
    assert any("WITH a AS (DELETE" in text for text in prepared), prepared
    assert not QueueMessage.objects.filter(queue=queue_name).exists()
    channel._drop_consumer_db()  # a new connection prepares again
    _send(broker, queue_name, "again")
    subscription.drain(0.05)
    assert [d.headers["id"] for d in received] == ["again"]
    assert len(_prepared_claims(channel)) == 1
    received[0].ack()
    subscription.close()


def test_a_pooled_consumer_prepares_nothing(queue_name):
    broker = Broker("django://", transport_options={"transaction_pooling": True})
    _send(broker, queue_name, "p")
    subscription, received = _collect(broker, queue_name, rounds=2)
    channel = subscription.channel
    if channel.consumer_db.vendor != "postgresql":
        subscription.close()
        pytest.skip("a PostgreSQL setting")
    assert [d.headers["id"] for d in received] == ["p"]
    assert _prepared_claims(channel) == []  # PgBouncer's next transaction may be another session
    received[0].ack()
    subscription.close()


# -- batched acks (ack_batch_seconds) and claims beyond the window (deep_claim_seconds) ------------
# A delay of 30 s keeps the flusher thread out of the way: what sends the acks is the round trip
# under test.
def test_queued_acks_travel_with_the_next_claim(queue_name):
    broker = _broker(ack_batch_seconds=30)
    _send(broker, queue_name, "first")
    _send(broker, queue_name, "second")
    subscription, received = _collect(broker, queue_name, prefetch=1, rounds=1)
    [first] = received
    first.ack()
    assert QueueMessage.objects.count() == 2  # queued here, not sent yet
    subscription.drain(0.05)  # the claim of "second" carries the ack of "first"
    assert [d.headers["id"] for d in received] == ["first", "second"]
    assert list(QueueMessage.objects.values_list("lease_owner", flat=True)) == [
        subscription.channel.owner
    ]
    received[1].ack()
    subscription.drain(0.05)  # the empty claim (or the idle wait) carries the last one
    assert QueueMessage.objects.count() == 0
    subscription.close()


def test_queued_acks_are_sent_within_the_delay_when_no_round_trip_comes(queue_name):
    broker = _broker(ack_batch_seconds=0.05)
    _send(broker, queue_name, "then-a-long-task")
    subscription, (delivery,) = _collect(broker, queue_name, rounds=1)
    delivery.ack()  # and the consumer never comes back to the channel (a long task)
    deadline = time.monotonic() + 5
    while QueueMessage.objects.exists():
        assert time.monotonic() < deadline, "the flusher did not send the ack"
        time.sleep(0.02)
    subscription.close()


def test_renewing_leases_or_closing_sends_queued_acks(queue_name):
    broker = _broker(ack_batch_seconds=30)
    _send(broker, queue_name, "renewed")
    renewing, (delivery,) = _collect(broker, queue_name, prefetch=1, rounds=1)
    delivery.ack()
    assert renewing.renew_leases() == 0  # not held any more: sent, not renewed
    assert QueueMessage.objects.count() == 0
    renewing.close()
    _send(broker, queue_name, "closed")
    closing, (delivery,) = _collect(broker, queue_name, prefetch=1, rounds=1)
    delivery.ack()
    closing.close()
    assert QueueMessage.objects.count() == 0


def test_an_acked_message_whose_lease_ran_out_is_deleted_not_claimed_again(queue_name):
    broker = _broker(lease_seconds=0.3, ack_batch_seconds=30)
    _send(broker, queue_name, "slow")
    subscription, received = _collect(broker, queue_name, rounds=1)
    time.sleep(0.4)  # the task outlived its lease (no renewal) and nobody took it over
    received[0].ack()  # queued; the next claim carries it and could see the row visible again
    subscription.drain(0.05)
    assert len(received) == 1
    assert QueueMessage.objects.count() == 0
    subscription.close()


def test_without_batching_an_ack_is_sent_before_it_returns(queue_name):
    broker = _broker(ack_batch_seconds=0)
    _send(broker, queue_name, "at-once")
    subscription, (delivery,) = _collect(broker, queue_name, rounds=1)
    delivery.ack()
    assert QueueMessage.objects.count() == 0
    subscription.close()


def _leased() -> int:
    return QueueMessage.objects.filter(lease_owner__isnull=False).count()


def _run_one(subscription, received) -> None:
    before = len(received)
    subscription.drain(0.05)
    assert len(received) == before + 1
    received[-1].ack()


def test_a_deep_backlog_of_short_tasks_is_claimed_beyond_the_window(queue_name):
    broker = _broker(ack_batch_seconds=30, deep_claim_seconds=5, claim_batch=4)
    for i in range(12):
        _send(broker, queue_name, f"d{i}")
    subscription, received = _collect(broker, queue_name, prefetch=1, rounds=1)
    assert _leased() == 1  # the first claim: the window
    received[0].ack()
    _run_one(subscription, received)  # the first came back full and quickly: twice as many
    assert len(subscription.buffered()) == 1
    _run_one(subscription, received)
    _run_one(subscription, received)  # the buffer was empty: a claim of 4 (claim_batch)
    assert len(subscription.buffered()) == 3
    subscription.close()  # gives the buffered ones back, uncounted
    assert _leased() == 0
    assert sorted(QueueMessage.objects.values_list("delivery_count", flat=True)) == [0] * 8


def test_claims_stay_within_the_window_when_tasks_take_longer(queue_name):
    broker = _broker(ack_batch_seconds=30, deep_claim_seconds=0.05, claim_batch=4)
    for i in range(4):
        _send(broker, queue_name, f"s{i}")
    subscription, received = _collect(broker, queue_name, prefetch=1, rounds=1)
    for _ in range(3):
        time.sleep(0.1)  # each task lasts longer than deep_claim_seconds
        received[-1].ack()
        before = len(received)
        subscription.drain(0.05)
        assert len(received) == before + 1
        assert subscription.buffered() == []
    subscription.close()


def test_without_deep_claims_a_claim_never_exceeds_the_window(queue_name):
    broker = _broker(ack_batch_seconds=30, deep_claim_seconds=0)
    for i in range(4):
        _send(broker, queue_name, f"w{i}")
    subscription, received = _collect(broker, queue_name, prefetch=1, rounds=1)
    received[0].ack()
    for _ in range(3):
        _run_one(subscription, received)
        assert subscription.buffered() == []
    subscription.close()
