"""The ``redis://`` transport: leased claims, priorities, delays, durable acks, real workers.

Every test uses Redis database 7 (10, 13, … under xdist) and queue names of its own, and deletes only its own keys.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.exceptions
import redis.sentinel
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count
from kombu import Connection

from django_tq.broker import Broker, get_broker
from django_tq.broker.delivery import Delivery
from django_tq.broker.subscription import Subscription
from django_tq.exceptions import PublishError
from django_tq.message import WireMessage
from django_tq.transport.leased import owner_prefix
from django_tq.transport.redis import (
    Channel,
    SecureTransport,
    Transport,
    database_number,
    new_message_id,
    pack_commands,
    split_tag,
)
from django_tq.transport.redis_sentinel import sentinel_addresses
from tests.conftest import require_service, wait_for
from tests.faults.conftest import RedisServer
from tests.settings import REDIS_DB
from tests.testapp.models import Execution
from tests.testapp.tasks import add, record, slow_record

REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB + 2}"


def message(body: str) -> WireMessage:
    """Return a small wire message whose body is ``body``."""
    return WireMessage(headers={"label": body}, body=body, content_type="text/plain")


def body_of(delivery: Delivery) -> str:
    """Return a delivery's body as text."""
    body = delivery.body
    return body.decode() if isinstance(body, bytes) else body


class Receiver:
    """A subscription that collects its deliveries (unacked) in a list."""

    def __init__(self, broker: Broker, queues: list[str], prefetch: int) -> None:
        self.deliveries: list[Delivery] = []
        self.subscription: Subscription = broker.subscribe(
            queues, prefetch=prefetch, on_delivery=self.deliveries.append
        )

    @property
    def channel(self) -> Channel:
        """Return the consuming channel."""
        channel = self.subscription.channel
        assert isinstance(channel, Channel)
        return channel

    def bodies(self) -> list[str]:
        """Return the bodies delivered so far."""
        return [body_of(delivery) for delivery in self.deliveries]

    def receive(self, count: int, timeout: float = 5.0) -> list[Delivery]:
        """Drain until ``count`` messages in all were delivered; return them."""

        def enough() -> bool:
            if len(self.deliveries) < count:
                self.subscription.drain(0.05)
            return len(self.deliveries) >= count

        wait_for(enough, timeout=timeout, interval=0, what=f"{count} deliveries")
        return self.deliveries[:count]

    def receive_nothing(self, seconds: float) -> None:
        """Drain for ``seconds``; fail if anything is delivered."""
        before = len(self.deliveries)
        self.subscription.drain(seconds)
        assert self.bodies()[before:] == []


@pytest.fixture
def redis_queue() -> Iterator[str]:
    """A queue name of this test's own; its keys are deleted afterwards."""
    require_service("Redis", 6379)
    name = f"tq-test-{uuid.uuid4().hex[:10]}"
    yield name
    with Broker(REDIS_URL).connection() as connection:
        connection.default_channel._delete(name)


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    """Open receivers on a Redis broker with a chosen lease; close them all at the end."""
    receivers: list[Receiver] = []

    def make(
        queues: list[str],
        *,
        prefetch: int = 4,
        lease_seconds: float = 60.0,
        ack_batch_seconds: float | None = None,
    ) -> Receiver:
        options: dict[str, Any] = {"lease_seconds": lease_seconds}
        if ack_batch_seconds is not None:
            options["ack_batch_seconds"] = ack_batch_seconds
        broker = Broker(REDIS_URL, transport_options=options)
        receiver = Receiver(broker, queues, prefetch)
        receivers.append(receiver)
        return receiver

    yield make
    for receiver in receivers:
        receiver.subscription.close()


@pytest.fixture
def broker() -> Broker:
    """A publishing broker on Redis database 7 (this xdist worker's third)."""
    require_service("Redis", 6379)
    return Broker(REDIS_URL)


# -- unit: URLs and tags ---------------------------------------------------------------------------
def test_url_names_host_port_database_and_password() -> None:
    broker = Broker("redis://user:s%3Acret@127.0.0.1:6390/3", connect_timeout=1.5)
    with broker.connection() as connection:
        channel = connection.default_channel
        settings = channel.client.connection_pool.connection_kwargs
        assert (settings["host"], settings["port"], settings["db"]) == ("127.0.0.1", 6390, 3)
        assert (settings["username"], settings["password"]) == ("user", "s:cret")
        assert settings["socket_connect_timeout"] == 1.5
    with Broker("rediss://127.0.0.1:6390/0?ssl_cert_reqs=required").connection() as connection:
        pool = connection.default_channel.client.connection_pool
        assert issubclass(pool.connection_class, redis.SSLConnection)
        assert pool.connection_kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    with Connection("rediss://127.0.0.1:6390/0", transport=SecureTransport) as connection:
        pool = connection.default_channel.client.connection_pool
        assert issubclass(pool.connection_class, redis.SSLConnection)
    assert [database_number(path) for path in (None, "", "/", "/7", "12", 4)] == [0, 0, 0, 7, 12, 4]
    assert split_tag("a/b/9:abc") == ("a/b", "9:abc")


def test_message_ids_are_unique_across_calls_and_forked_processes() -> None:
    first, second = new_message_id(5), new_message_id(0)
    assert first.startswith("5:") and second.startswith("0:") and first[2:] != second[2:]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a prefork pool's, say
        os.write(write, new_message_id(5).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    in_child = os.read(read, 200).decode()
    os.close(read)
    os.close(write)
    assert in_child.split("-")[0] != first.split("-")[0]  # its own prefix, not the parent's


@pytest.mark.parametrize("hiredis", [True, False], ids=["hiredis", "python"])
def test_commands_are_packed_as_redis_expects(hiredis: bool, monkeypatch: Any) -> None:
    if not hiredis:
        monkeypatch.setattr("django_tq.transport.redis._hiredis_pack", None)
    packed = pack_commands([("EVALSHA", "ab", 1, "k", "é"), ("WAIT", 1, 1000)])
    assert packed == (
        b"*5\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n"
        b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$4\r\n1000\r\n"
    )


def test_redis_errors_are_connection_errors() -> None:
    assert issubclass(redis.exceptions.ConnectionError, Transport.connection_errors)
    assert issubclass(redis.exceptions.TimeoutError, Transport.connection_errors)


def test_unreachable_redis_fails_publish_loudly() -> None:
    broker = Broker("redis://127.0.0.1:1/0", connect_timeout=0.5)
    with pytest.raises(PublishError):
        broker.publish(message("lost"), queue="nowhere")


# -- through kombu: publish, claim, ack ------------------------------------------------------------
def test_publish_and_consume_roundtrip(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("hello"), queue=redis_queue)
    assert broker.depth(redis_queue) == 1
    receiver = make_receiver([redis_queue])
    [delivery] = receiver.receive(1)
    assert body_of(delivery) == "hello"
    assert delivery.headers["label"] == "hello"
    assert delivery.delivery_count == 1
    assert split_tag(delivery.tag)[0] == redis_queue
    delivery.ack()
    receiver.channel.flush_acks()  # acks are batched (see the tests of batched acks below)
    assert broker.depth(redis_queue) == 0


def test_highest_priority_first_and_fifo_within_a_priority(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    for body, priority in [("a0", 0), ("b0", 0), ("c9", 9), ("d5", 5), ("e9", 9), ("f0", None)]:
        broker.publish(message(body), queue=redis_queue, priority=priority)
    receiver = make_receiver([redis_queue], prefetch=1)
    order = []
    for _ in range(6):
        [delivery] = receiver.receive(len(receiver.deliveries) + 1)[-1:]
        order.append(body_of(delivery))
        delivery.ack()
    assert order == ["c9", "e9", "d5", "a0", "b0", "f0"]


def test_not_before_holds_a_message_back_until_due(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    broker.publish(message("later"), queue=redis_queue, not_before=due.isoformat())
    broker.publish(message("now"), queue=redis_queue)
    receiver = make_receiver([redis_queue])
    receiver.receive(1)
    receiver.receive_nothing(0.3)
    assert receiver.bodies() == ["now"]
    [_, later] = receiver.receive(2)
    assert body_of(later) == "later"
    assert dt.datetime.now(dt.UTC) >= due
    assert later.delivery_count == 1


def test_an_acked_message_never_comes_back(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("once"), queue=redis_queue)
    first = make_receiver([redis_queue], lease_seconds=0.3)
    [delivery] = first.receive(1)
    delivery.ack()
    second = make_receiver([redis_queue], lease_seconds=0.3)
    second.receive_nothing(0.8)  # well past the first lease
    assert broker.depth(redis_queue) == 0


def test_an_expired_lease_is_delivered_again(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("crashy"), queue=redis_queue)
    first = make_receiver([redis_queue], lease_seconds=0.3)
    [held] = first.receive(1)
    second = make_receiver([redis_queue], lease_seconds=0.3)
    [again] = second.receive(1)
    assert body_of(again) == "crashy"
    assert again.delivery_count == 2
    again.ack()
    held.ack()  # the first holder finishing late changes nothing
    first.channel.flush_acks()
    second.channel.flush_acks()
    assert broker.depth(redis_queue) == 0


def test_a_late_ack_from_a_holder_whose_lease_was_taken_over_is_fenced(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("partitioned"), queue=redis_queue)
    first = make_receiver([redis_queue], lease_seconds=0.3)
    [stale] = first.receive(1)
    second = make_receiver([redis_queue], lease_seconds=30)
    [current] = second.receive(1)  # the first lease ran out: the message is the second's now
    stale.ack()  # the first holder comes back (a healed partition) and acks late
    first.channel.flush_acks()
    assert broker.depth(redis_queue) == 1  # still there: the second holder's lease stands
    third = make_receiver([redis_queue], lease_seconds=30)
    third.receive_nothing(0.3)  # and nobody else receives it meanwhile
    current.ack()
    second.channel.flush_acks()
    assert broker.depth(redis_queue) == 0


# -- batched acks (ack_batch_seconds) ---------------------------------------------------------------
# A delay of 30 s keeps the flusher thread out of the way: what sends the acks is the round trip
# under test.
def test_queued_acks_travel_with_the_next_claim(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("first"), queue=redis_queue)
    broker.publish(message("second"), queue=redis_queue)
    receiver = make_receiver([redis_queue], prefetch=1, ack_batch_seconds=30)
    [first] = receiver.receive(1)
    first.ack()
    assert broker.depth(redis_queue) == 2  # queued here, not sent yet
    [_, second] = receiver.receive(2)  # the claim of "second" carries the ack of "first"
    assert body_of(second) == "second"
    assert broker.depth(redis_queue) == 1


def test_the_idle_wait_carries_queued_acks(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("only"), queue=redis_queue)
    receiver = make_receiver([redis_queue], ack_batch_seconds=30)
    [delivery] = receiver.receive(1)
    delivery.ack()
    receiver.receive_nothing(0.1)  # pipelined in front of the BLPOP
    assert broker.depth(redis_queue) == 0


def test_queued_acks_are_sent_within_the_delay_when_no_round_trip_comes(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("then-a-long-task"), queue=redis_queue)
    receiver = make_receiver([redis_queue], ack_batch_seconds=0.05)
    [delivery] = receiver.receive(1)
    delivery.ack()  # and the consumer never comes back to the channel (a long task)
    wait_for(lambda: broker.depth(redis_queue) == 0, timeout=5, what="the flusher's ack")


def test_renewing_leases_or_closing_sends_queued_acks(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("renewed"), queue=redis_queue)
    broker.publish(message("closed"), queue=redis_queue)
    renewing = make_receiver([redis_queue], prefetch=1, ack_batch_seconds=30)
    [delivery] = renewing.receive(1)
    delivery.ack()
    assert renewing.subscription.renew_leases() == 0  # not held any more: sent, not renewed
    assert broker.depth(redis_queue) == 1
    closing = make_receiver([redis_queue], prefetch=1, ack_batch_seconds=30)
    [delivery] = closing.receive(1)
    delivery.ack()
    closing.subscription.close()
    assert broker.depth(redis_queue) == 0


def test_a_batched_late_ack_is_fenced_like_a_lone_one(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("partitioned"), queue=redis_queue)
    first = make_receiver([redis_queue], lease_seconds=0.3, ack_batch_seconds=30)
    [stale] = first.receive(1)
    second = make_receiver([redis_queue], lease_seconds=30)
    [current] = second.receive(1)  # the first lease ran out: the message is the second's now
    stale.ack()
    first.receive_nothing(0.1)  # the ack travels with the first holder's next claim: refused
    assert broker.depth(redis_queue) == 1
    current.ack()
    second.channel.flush_acks()
    assert broker.depth(redis_queue) == 0


@pytest.fixture
def fresh_redis(tmp_path: Any) -> Iterator[str]:
    """The URL of a ``redis-server`` of this test's own: no script in its cache yet."""
    server = RedisServer(tmp_path)
    server.start()
    yield server.url
    server.kill()


def test_a_claim_behind_an_ack_script_redis_does_not_know_loses_nothing(
    fresh_redis: str,
) -> None:
    # The first ack of a worker on a new server travels with a claim: the ack script is
    # refused (NOSCRIPT) while the claim script, known already, runs and leases "second".
    # Only the refused ack may run again: a second claim would deliver "third", and "second"
    # would wait out its lease (what tests/faults/test_tls.py met, on its own redis-server).
    broker = Broker(fresh_redis)
    for body in ("first", "second", "third"):
        broker.publish(message(body), queue="fresh")
    receiver = Receiver(
        Broker(fresh_redis, transport_options={"ack_batch_seconds": 30}), ["fresh"], prefetch=1
    )
    try:
        [first] = receiver.receive(1)
        first.ack()
        second = receiver.receive(2)[1]
        assert body_of(second) == "second"
        assert broker.depth("fresh") == 2  # the ack of "first" ran
        second.ack()
        assert body_of(receiver.receive(3)[2]) == "third"
    finally:
        receiver.subscription.close()


def test_an_idle_wait_behind_an_ack_script_redis_does_not_know_keeps_its_claim(
    fresh_redis: str,
) -> None:
    broker = Broker(fresh_redis)
    broker.publish(message("first"), queue="fresh")
    receiver = Receiver(
        Broker(fresh_redis, transport_options={"ack_batch_seconds": 30}), ["fresh"], prefetch=1
    )
    try:
        [first] = receiver.receive(1)
        first.ack()
        broker.publish(message("second"), queue="fresh")
        receiver.channel.wait(1.0)  # [ack (refused: NOSCRIPT), BLPOP, claim of "second"]
        assert [raw["body"] for _q, raw in receiver.channel.buffered()] == ["second"]
        assert body_of(receiver.receive(2)[1]) == "second"
        receiver.channel.flush_acks()  # the refused ack was kept, and goes now
        assert broker.depth("fresh") == 1
    finally:
        receiver.subscription.close()


def test_an_idle_consumer_goes_from_an_empty_claim_straight_to_its_wait(
    fresh_redis: str,
) -> None:
    broker = Broker(fresh_redis)
    broker.publish(message("first"), queue="fresh")
    receiver = Receiver(
        Broker(fresh_redis, transport_options={"ack_batch_seconds": 30}), ["fresh"], prefetch=4
    )
    admin = redis.Redis.from_url(fresh_redis)
    try:
        [first] = receiver.receive(1)  # a claim of up to 4 took 1: the queue is empty
        first.ack()
        receiver.channel.flush_acks()  # (the ack script is known from now on)
        admin.config_resetstat()
        receiver.subscription.drain(0.05)
        stats = admin.info("commandstats")
        # [BLPOP, claim], twice if the BLPOP found a stale token (the first claim took "first"
        # without one): every claim rides on a wait, none goes on its own before it
        waits = stats["cmdstat_blpop"]["calls"]
        assert waits >= 1
        assert stats["cmdstat_evalsha"]["calls"] == waits
        assert broker.depth("fresh") == 0
        # a message whose wake token is gone is still claimed, when that BLPOP times out
        broker.publish(message("tokenless"), queue="fresh")
        admin.delete("tq:{fresh}:wake")
        assert body_of(receiver.receive(2, timeout=3)[1]) == "tokenless"
    finally:
        receiver.subscription.close()


def test_without_batching_an_ack_is_sent_before_it_returns(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("at-once"), queue=redis_queue)
    receiver = make_receiver([redis_queue], ack_batch_seconds=0)
    [delivery] = receiver.receive(1)
    delivery.ack()
    assert broker.depth(redis_queue) == 0


def test_renewed_leases_are_not_delivered_again(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("long"), queue=redis_queue)
    holder = make_receiver([redis_queue], lease_seconds=0.5)
    [held] = holder.receive(1)
    other = make_receiver([redis_queue], lease_seconds=0.5)
    for _ in range(6):  # 1.2 s, more than twice the lease
        assert holder.subscription.renew_leases() == 1
        other.receive_nothing(0.2)
    held.ack()
    other.receive_nothing(0.6)


def test_release_buffered_gives_back_prefetched_messages_uncounted(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    for body in ("m1", "m2", "m3"):
        broker.publish(message(body), queue=redis_queue)
    first = make_receiver([redis_queue], prefetch=5)
    [started] = first.receive(1)  # one claim took all three; two wait in the buffer
    assert body_of(started) == "m1"
    assert first.subscription.release_unstarted() == 2
    second = make_receiver([redis_queue], prefetch=5)
    returned = second.receive(2)
    assert [body_of(d) for d in returned] == ["m2", "m3"]
    assert [d.delivery_count for d in returned] == [1, 1]
    second.receive_nothing(0.2)  # the started one stays leased to the first receiver


def test_release_owner_prefix_frees_a_dead_process_leases(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("orphan"), queue=redis_queue)
    broker.publish(message("prefetched"), queue=redis_queue)
    holder = make_receiver([redis_queue])
    [running, _prefetched] = holder.receive(2)
    other = make_receiver([redis_queue])
    other.receive_nothing(0.1)
    assert holder.channel.owner.startswith(owner_prefix())
    assert broker.release_leases_of(os.getpid(), running=[running.tag]) == 2
    again = {body_of(d): d.delivery_count for d in other.receive(2)}
    # The running message may have run: its delivery counts. The prefetched one never started.
    assert again == {"orphan": 2, "prefetched": 1}
    assert broker.release_leases_of(os.getpid() + 1_000_000) == 0


def test_reject_with_requeue_is_visible_at_once(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("again"), queue=redis_queue)
    first = make_receiver([redis_queue])  # a 60 s lease: only the requeue can free it
    [delivery] = first.receive(1)
    delivery.requeue()
    second = make_receiver([redis_queue])
    [again] = second.receive(1)
    assert body_of(again) == "again"
    assert again.delivery_count == 2


def test_purge_removes_waiting_messages_and_size_counts_leased_ones(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    for body in ("p1", "p2", "p3", "p4"):
        broker.publish(message(body), queue=redis_queue)
    broker.publish(message("delayed"), queue=redis_queue, not_before=later)
    receiver = make_receiver([redis_queue], prefetch=1)
    [leased] = receiver.receive(1)
    assert broker.depth(redis_queue) == 5
    assert broker.purge([redis_queue]) == 4
    assert broker.depth(redis_queue) == 1
    leased.ack()
    receiver.channel.flush_acks()
    assert broker.depth(redis_queue) == 0
    receiver.receive_nothing(0.2)


def test_queue_delete_removes_every_key_of_the_queue(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    broker.publish(message("ready"), queue=redis_queue, priority=3)
    broker.publish(message("delayed"), queue=redis_queue, not_before=later)
    broker.publish(message("leased"), queue=redis_queue, priority=9)
    make_receiver([redis_queue], prefetch=1).receive(1)
    client = redis.Redis.from_url(REDIS_URL)
    assert client.keys(f"tq:{{{redis_queue}}}:*")
    with Broker(REDIS_URL).connection() as connection:  # a process that never declared it
        connection.default_channel.queue_delete(redis_queue)
    assert client.keys(f"tq:{{{redis_queue}}}:*") == []
    assert not client.sismember("tq:queues", redis_queue)


def test_a_consumer_of_several_queues_receives_from_each(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    second_queue = f"{redis_queue}-b"
    try:
        receiver = make_receiver([redis_queue, second_queue])
        receiver.receive_nothing(0.1)
        broker.publish(message("from-b"), queue=second_queue)
        broker.publish(message("from-a"), queue=redis_queue)
        receiver.receive(2)
        assert sorted(receiver.bodies()) == ["from-a", "from-b"]
        for delivery in receiver.deliveries:
            delivery.ack()
        receiver.channel.flush_acks()  # one ack script per queue, in one round trip
        assert broker.depth(second_queue) == 0
        assert broker.depth(redis_queue) == 0
    finally:
        with Broker(REDIS_URL).connection() as connection:
            connection.default_channel._delete(second_queue)


# -- real workers ----------------------------------------------------------------------------------
@pytest.fixture
def redis_worker_settings(settings: Any, redis_queue: str) -> None:
    """Point this test and the workers it starts at Redis and the test's own queue (2 s leases)."""
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": REDIS_URL,
        "DEFAULT_QUEUE": redis_queue,
        "LEASE_SECONDS": 2,
    }


@pytest.mark.django_db(transaction=True)
def test_a_prefork_worker_runs_every_task_exactly_once(
    redis_worker_settings: None, redis_queue: str, start_worker: Any
) -> None:
    assert get_broker().url == REDIS_URL
    worker = start_worker("-P", "prefork", "-c", "2", "-Q", redis_queue)
    assert add.delay(2, 3).get(timeout=20) == 5
    prefix = uuid.uuid4().hex[:8]
    for number in range(200):
        record.delay(f"{prefix}-{number}")
    executions = Execution.objects.filter(label__startswith=prefix)
    wait_for(lambda: executions.count() >= 200, timeout=30, what="200 executions")
    assert worker.stop() == 0, worker.output()
    per_label = executions.values("label").annotate(runs=Count("id"))
    assert len(per_label) == 200
    assert {row["runs"] for row in per_label} == {1}


@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_task_is_finished_by_another_after_the_lease(
    redis_worker_settings: None, redis_queue: str, start_worker: Any
) -> None:
    first = start_worker("-P", "prefork", "-c", "1", "-Q", redis_queue)
    label = uuid.uuid4().hex[:8]
    result = slow_record.delay(2.0, label)
    started = Execution.objects.filter(label=f"start:{label}")
    wait_for(started.exists, timeout=15, what="the task to start")
    first.kill_tree()
    second = start_worker("-P", "prefork", "-c", "1", "-Q", redis_queue)
    assert result.get(timeout=15) == label
    assert started.count() == 2
    assert Execution.objects.filter(label=f"end:{label}").count() == 1
    assert second.stop() == 0, second.output()


def test_scripts_survive_a_script_cache_flush_and_a_dropped_connection(
    broker: Broker, redis_queue: str, make_receiver: Any
) -> None:
    broker.publish(message("before"), queue=redis_queue)
    admin = redis.Redis.from_url(REDIS_URL)
    admin.script_flush()  # what a Redis restart does to the script cache
    broker.publish(message("after flush"), queue=redis_queue)
    own = admin.client_id()
    for (
        client
    ) in admin.client_list():  # drop this database's client connections, as a restart would
        if client["db"] == str(REDIS_DB + 2) and int(client["id"]) != own:
            admin.client_kill_filter(_id=client["id"])
    broker.publish(message("after reconnect"), queue=redis_queue)  # reconnects by itself
    receiver = make_receiver([redis_queue])
    bodies = sorted(body_of(d) for d in receiver.receive(3))
    assert bodies == ["after flush", "after reconnect", "before"]


# -- replicas and Sentinel (the failover itself: tests/faults/test_sentinel.py) ---------------------
def test_a_publish_no_replica_acknowledged_fails_loudly(redis_queue: str) -> None:
    broker = Broker(
        REDIS_URL,
        transport_options={"replica_acks": 1, "replica_ack_timeout": 0.1},
        connect_timeout=0.5,
    )
    with pytest.raises(PublishError, match="0 of 1 replicas acknowledged"):
        broker.publish(message("unsafe"), queue=redis_queue)  # the shared Redis has no replica


def test_a_sentinel_url_names_every_sentinel_and_needs_a_master_name() -> None:
    url = "sentinel://127.0.0.1:26390;sentinel://127.0.0.2:26391/3;sentinel://h"
    assert sentinel_addresses(url.split(";")) == [
        ("127.0.0.1", 26390),
        ("127.0.0.2", 26391),
        ("h", 26379),
    ]
    with (
        Broker(url).connection() as connection,
        pytest.raises(ImproperlyConfigured, match="master"),
    ):
        connection.default_channel.client  # noqa: B018 - the client is built on first use
    broker = Broker(url, transport_options={"master_name": "main"})
    with broker.connection() as connection:
        pool = connection.default_channel.client.connection_pool
        assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
        assert pool.service_name == "main"
        assert [
            s.connection_pool.connection_kwargs["port"] for s in pool.sentinel_manager.sentinels
        ] == [
            26390,
            26391,
            26379,
        ]


def test_no_sentinel_answering_says_which_and_why_in_a_line() -> None:
    """redis-py names each failed sentinel by its whole connection pool; ours by its address."""
    ports = []
    for _ in range(2):
        with socket.socket() as probe:  # nothing listens there once it is closed
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    url = ";".join(f"sentinel://127.0.0.1:{port}" for port in ports)
    broker = Broker(url, transport_options={"master_name": "main"}, connect_timeout=0.5)
    with pytest.raises(PublishError, match="No master found for 'main'") as refused:
        broker.publish(message("nowhere"), queue="q")
    text = str(refused.value)
    assert all(f"sentinel 127.0.0.1:{port} - " in text for port in ports)
    assert "ConnectionPool" not in text
    assert "Connection refused" in text
