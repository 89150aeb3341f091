"""The fanout channel (RabbitMQ exchange, Redis Pub/Sub, PostgreSQL NOTIFY) and remote control on it."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_tq import control, mailbox
from django_tq.broker import Broker
from django_tq.broker.fanout import NOTIFY_LIMIT, Fanout, PostgresFanout, open_fanout
from django_tq.conf import tq_settings
from tests.conftest import REDIS_URL, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


def _fanout(url: str) -> Fanout:
    fanout = open_fanout(Broker(url), prefix=tq_settings.CONTROL_EXCHANGE)
    assert fanout is not None
    return fanout


def _break(subscriber: Any) -> None:
    """Cut the subscriber's connection at the server (PostgreSQL, Redis) or under it (AMQP)."""
    if hasattr(subscriber, "db"):
        pid = subscriber.db.connection.info.backend_pid
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    elif hasattr(subscriber, "pubsub"):
        host, port = subscriber.pubsub.connection._sock.getsockname()[:2]
        subscriber.fanout.client().client_kill_filter(_id=None, addr=f"{host}:{port}")
    else:
        subscriber.connection._connection.connection.transport.sock.shutdown(socket.SHUT_RDWR)


def _poll_until(subscriber: Any, count: int, timeout: float = 5.0) -> list[str]:
    found: list[str] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        try:
            found += subscriber.poll()
        except Exception:
            pass  # the lost connection: the next poll connects again
        time.sleep(0.02)
    return found


def test_every_subscriber_gets_what_is_published_and_poll_never_blocks(fanout_url):
    fanout = _fanout(fanout_url)
    first, second = fanout.subscribe("test"), fanout.subscribe("test")
    other_topic = fanout.subscribe("other")
    try:
        started = time.monotonic()
        assert first.poll() == [] and second.poll() == []
        assert time.monotonic() - started < 0.5  # nothing there: returns at once
        fanout.publish("test", '{"n": 1}')
        fanout.publish("test", '{"n": 2}')
        assert _poll_until(first, 2) == ['{"n": 1}', '{"n": 2}']
        assert _poll_until(second, 2) == ['{"n": 1}', '{"n": 2}']
        assert other_topic.poll() == []
    finally:
        for subscriber in (first, second, other_topic):
            subscriber.close()
        fanout.close()


def test_a_subscriber_connects_again_after_losing_its_connection(fanout_url):
    fanout = _fanout(fanout_url)
    subscriber = fanout.subscribe("test")
    try:
        _break(subscriber)
        with pytest.raises(Exception):  # noqa: B017 - the transport's own connection error
            for _ in range(50):
                subscriber.poll()
                time.sleep(0.02)
        subscriber.poll()  # connects and subscribes again
        fanout.publish("test", "after")
        assert _poll_until(subscriber, 1) == ["after"]
    finally:
        subscriber.close()
        fanout.close()


def test_a_notify_payload_is_bounded():
    fanout = PostgresFanout("default", "p")
    with pytest.raises(ValueError, match="at most"):
        fanout.publish("test", "x" * (NOTIFY_LIMIT + 1))


def test_replies_reach_the_box_opened_for_them(fanout_url):
    if fanout_url == "django://":
        pytest.skip("on django:// replies are rows")
    fanout = _fanout(fanout_url)
    box = fanout.reply_box("r1")
    try:
        fanout.reply("r1", "a")
        fanout.reply("r2", "not for this box")
        fanout.reply("r1", "b")
        found: list[str] = []
        deadline = time.monotonic() + 5
        while len(found) < 2 and time.monotonic() < deadline:
            found += box.poll()
        assert found == ["a", "b"]
        assert box.poll() == []  # read once
    finally:
        box.close()
        fanout.close()


# -- remote control on it -------------------------------------------------------------------------
def test_the_mailbox_travels_on_the_broker_or_is_woken_by_notify(fanout_url):
    inbox = mailbox.Inbox("a@h")
    try:
        assert inbox.transport == ("notify" if fanout_url == "django://" else "broker")
        command = mailbox.send("ping", destination=["a@h"])
        found = wait_for_commands(inbox)
        assert [c.command_id for c in found] == [command.command_id]
        inbox.reply(command, "pong")
        replies = mailbox.collect(command, timeout=5, limit=1)
        assert [(r.hostname, r.payload) for r in replies] == [("a@h", "pong")]
    finally:
        inbox.close()


def wait_for_commands(inbox: mailbox.Inbox, timeout: float = 5.0) -> list[mailbox.Command]:
    found: list[mailbox.Command] = []
    deadline = time.monotonic() + timeout
    while not found and time.monotonic() < deadline:
        found = inbox.poll()
        time.sleep(0.02)
    return found


def test_an_inbox_woken_by_notify_reads_the_table_only_when_woken(fanout_url):
    if fanout_url != "django://":
        pytest.skip("PostgreSQL only")
    inbox = mailbox.Inbox("a@h")
    try:
        inbox.poll()  # the first read
        with CaptureQueriesContext(connection) as queries:
            for _ in range(5):
                assert inbox.poll() == []
        assert len(queries) == 0  # idle: a look at the socket, no query
        mailbox.send("ping")
        assert len(wait_for_commands(inbox, timeout=2)) == 1
    finally:
        inbox.close()


def test_sqlite_and_mariadb_read_the_table_every_tick(settings):
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL has NOTIFY")
    settings.TQ = {**settings.TQ, "BROKER_URL": "django://"}
    inbox = mailbox.Inbox("a@h")
    assert inbox.transport == "poll"
    command = mailbox.send("ping")
    assert [c.command_id for c in inbox.poll()] == [command.command_id]


def _forged(name: str, **changes: Any) -> str:
    now = timezone.now()
    envelope = {
        "command_id": "forged",
        "name": name,
        "arguments": {},
        "destination": None,
        "sender": "intruder",
        "created_at": now.isoformat(),
        "expires_at": (now + dt.timedelta(seconds=10)).isoformat(),
        "signature": "",
        **changes,
    }
    return json.dumps(envelope)


def test_a_signed_fleet_refuses_forged_commands_on_the_broker(
    fanout_url, settings, start_worker, caplog
):
    if fanout_url == "django://":
        pytest.skip("on django:// commands are rows (tests/core/test_remote_control.py)")
    settings.TQ = {**settings.TQ, "SIGNING": True}
    worker = start_worker("-n", "signed@test", "-P", "solo")
    assert control.inspect(timeout=5).ping() == {"signed@test": "pong"}  # signed: answered
    fanout = _fanout(fanout_url)
    try:
        box = fanout.reply_box("forged")
        fanout.publish("control", _forged("shutdown"))
        fanout.publish("control", _forged("pool_grow", signature="bad", command_id="altered"))
        fanout.publish("control", "not json at all")
        wait_for(lambda: "Refused control command 'pool_grow' [altered]" in worker.output(), 10)
        assert "Refused control command 'shutdown' [forged]" in worker.output()
        assert "Ignored a control message that is not a command" in worker.output()
        assert box.poll() == []  # no reply to the forged one
        box.close()
    finally:
        fanout.close()
    assert worker.process.poll() is None
    assert control.inspect(timeout=5).ping() == {"signed@test": "pong"}  # still answering


def test_a_worker_listens_again_after_its_notify_connection_is_cut(fanout_url, start_worker):
    """The worker's LISTEN connection is killed; it logs the outage and listens again."""
    if fanout_url != "django://":
        pytest.skip("PostgreSQL: the other transports reconnect in-process (above)")
    worker = start_worker("-n", "cut@test", "-P", "solo")
    assert control.inspect(timeout=5).ping() == {"cut@test": "pong"}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'"
            " AND pid <> pg_backend_pid() AND datname = current_database()"
        )
    wait_for(lambda: "remote_control failed" in worker.output(), 10, what="the outage logged")
    wait_for(
        lambda: control.inspect(timeout=2).ping() == {"cut@test": "pong"},
        30,
        what="answers again",
    )
    assert worker.process.poll() is None


def _local_ports(pid: int, remote_port: int) -> set[int]:
    """Return the local ports of process ``pid``'s TCP connections to ``remote_port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.split(":")[1], 16) == remote_port:
                ports.add(int(local.split(":")[1], 16))
    return ports


def test_a_worker_subscribes_again_after_redis_cuts_its_connection(fanout_url, start_worker):
    """Redis drops the worker parent's Pub/Sub connection; it logs the outage, subscribes again."""
    if fanout_url != REDIS_URL:
        pytest.skip("Redis: the worker's own connection is found by its port")
    worker = start_worker("-n", "cut@test", "-P", "solo")
    assert control.inspect(timeout=5).ping() == {"cut@test": "pong"}
    client = Broker(fanout_url).connection().default_channel.client
    ports = _local_ports(worker.pid, 6379)
    subscribed = [
        entry
        for entry in client.client_list(_type="pubsub")
        if int(entry["addr"].rsplit(":", 1)[1]) in ports
    ]
    assert subscribed, "the worker parent holds a Pub/Sub connection"
    for entry in subscribed:
        client.client_kill_filter(_id=entry["id"])
    wait_for(lambda: "remote_control failed" in worker.output(), 10, what="the outage logged")
    wait_for(
        lambda: control.inspect(timeout=2).ping() == {"cut@test": "pong"},
        30,
        what="answers again",
    )
    assert "Traceback" not in worker.output()  # a lost connection is an outage, not a bug
    assert worker.process.poll() is None
