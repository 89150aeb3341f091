"""Redis Sentinel: the primary killed mid-burst, the workers follow the promoted replica.

A primary, a replica and three sentinels of the test's own, on free ports. Publishes wait for the
replica (``replica_acks=1``), so every task whose ``.delay()`` returned survives the failover.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from django_tq.broker import Broker
from django_tq.exceptions import PublishError
from tests.conftest import wait_for
from tests.faults.conftest import (
    LEASE_SECONDS,
    Service,
    finished_count,
    skip_without,
    wait_until_finished,
)
from tests.testapp.tasks import slow_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MASTER = "tqprimary"


class RedisNode(Service):
    """A ``redis-server`` without persistence: its replica is what keeps the data."""

    name = "redis"

    def __init__(self, directory: Path, *, replica_of: int | None = None) -> None:
        directory.mkdir(exist_ok=True)
        super().__init__(directory)
        self.replica_of = replica_of

    def command(self) -> list[str]:
        replica = ("--replicaof", "127.0.0.1", str(self.replica_of)) if self.replica_of else ()
        return [
            skip_without("redis-server"),
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(self.directory), *replica),
            *("--repl-diskless-sync-delay", "0"),  # a replica syncs at once
        ]


class SentinelNode(Service):
    """A ``redis-server --sentinel`` watching the primary (a failover within about 2 s)."""

    name = "sentinel"

    def __init__(self, directory: Path, primary_port: int) -> None:
        directory.mkdir(exist_ok=True)
        super().__init__(directory)
        (directory / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 4000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )

    def command(self) -> list[str]:
        return [skip_without("redis-server"), str(self.directory / "sentinel.conf"), "--sentinel"]


def primary_port(sentinel: SentinelNode) -> int:
    """Return the port of the primary ``sentinel`` names now."""
    client = redis.Redis(host="127.0.0.1", port=sentinel.port, decode_responses=True)
    try:
        return int(client.sentinel_get_master_addr_by_name(MASTER)[1])
    finally:
        client.close()


def replicas_confirm(node: RedisNode) -> bool:
    """Return whether a replica of ``node`` acknowledges a write within a second (``WAIT``)."""
    client = redis.Redis(host="127.0.0.1", port=node.port)
    try:
        client.set("tq-replication-probe", "1")
        return int(client.wait(1, 1000)) >= 1
    finally:
        client.close()


def test_a_failover_mid_burst_loses_no_accepted_task(tmp_path, queue_name, settings, start_worker):
    primary = RedisNode(tmp_path / "primary")
    primary.start()
    replica = RedisNode(tmp_path / "replica", replica_of=primary.port)
    replica.start()
    wait_for(lambda: replicas_confirm(primary), 20, what="the replica to sync")
    sentinels = [SentinelNode(tmp_path / f"sentinel-{n}", primary.port) for n in range(3)]
    servers = [primary, replica, *sentinels]
    try:
        for sentinel in sentinels:
            sentinel.start()
        url = ";".join(f"sentinel://127.0.0.1:{sentinel.port}/0" for sentinel in sentinels)
        options = {"master_name": MASTER, "replica_acks": 1, "replica_ack_timeout": 0.5}
        settings.TQ = {
            **settings.TQ,
            "BROKER_URL": url,
            "BROKER_TRANSPORT_OPTIONS": options,
            "DEFAULT_QUEUE": queue_name,
            "LEASE_SECONDS": LEASE_SECONDS,
            "BROKER_CONNECTION_TIMEOUT": 1.0,
        }
        worker = start_worker("-P", "prefork", "-c", "2")
        accepted = [slow_record.delay(0.02, "b").id for _ in range(150)]
        wait_for(lambda: finished_count() >= 20, 60, what="20 tasks done")

        primary.kill()  # SIGKILL: no goodbye to the replica or the sentinels
        killed_at = time.monotonic()
        refused = 0
        while time.monotonic() - killed_at < 30 and primary_port(sentinels[0]) == primary.port:
            try:
                accepted.append(slow_record.delay(0, "during").id)
            except PublishError:
                refused += 1
        assert primary_port(sentinels[0]) == replica.port, "no failover within 30 s"
        failover_seconds = time.monotonic() - killed_at

        # The failed host comes back: the sentinels make it a replica of the new primary, so
        # publishes have a replica to wait for again.
        primary.start()
        for _ in range(50):
            deadline = time.monotonic() + 30
            while True:
                try:
                    accepted.append(slow_record.delay(0, "after").id)
                    break
                except PublishError:
                    assert time.monotonic() < deadline, "publishing never came back"
        runs = wait_until_finished(accepted, 120)
        assert runs.lost(accepted) == set()
        assert worker.process.poll() is None, worker.output()  # the same worker followed
        assert Broker(url, transport_options=options).depth(queue_name) == 0
        print(f"failover: {failover_seconds:.1f} s, {refused} publishes refused meanwhile")
    finally:
        for server in servers:
            server.kill()
