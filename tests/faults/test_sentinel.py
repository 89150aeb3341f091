"""Redis Sentinel: the primary killed mid-burst, the workers follow the promoted replica.

A primary, a replica and three sentinels of the test's own, on free ports. Publishes wait for the
replica (``replica_acks=1``), so every task whose ``.delay()`` returned survives the failover.
The same with every server speaking only TLS and requiring client certificates
(:mod:`tests.faults.certificates`): the sentinels over ``sentinel_kwargs``, the primary over
``BROKER_USE_SSL``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from django_tq.broker import Broker
from django_tq.exceptions import PublishError
from django_tq.message import WireMessage
from tests.conftest import wait_for
from tests.faults.certificates import Certificates, make_certificates
from tests.faults.conftest import (
    LEASE_SECONDS,
    Service,
    finished_count,
    skip_without,
    wait_until_finished,
)
from tests.testapp.tasks import add, slow_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MASTER = "tqprimary"


class RedisNode(Service):
    """A ``redis-server`` without persistence: its replica is what keeps the data."""

    name = "redis"

    def __init__(
        self,
        directory: Path,
        *,
        replica_of: int | None = None,
        certificates: Certificates | None = None,
    ) -> None:
        directory.mkdir(exist_ok=True)
        super().__init__(directory)
        self.replica_of = replica_of
        self.certificates = certificates

    def command(self) -> list[str]:
        replica = ("--replicaof", "127.0.0.1", str(self.replica_of)) if self.replica_of else ()
        ports = ("--port", str(self.port))
        if self.certificates is not None:  # TLS only, replicating over TLS too
            ports = ("--port", "0", "--tls-port", str(self.port), "--tls-replication", "yes")
        return [
            skip_without("redis-server"),
            *ports,
            *tls_directives(self.certificates),
            *("--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(self.directory), *replica),
            *("--repl-diskless-sync-delay", "0"),  # a replica syncs at once
        ]


def tls_directives(certificates: Certificates | None) -> list[str]:
    """Return a server's TLS options: its certificate, client certificates required, and the
    client certificate it shows when it connects (replication, sentinels)."""
    if certificates is None:
        return []
    c = certificates
    return [
        *("--tls-cert-file", str(c.server_cert), "--tls-key-file", str(c.server_key)),
        *("--tls-ca-cert-file", str(c.ca), "--tls-auth-clients", "yes"),
        *("--tls-client-cert-file", str(c.client_cert)),
        *("--tls-client-key-file", str(c.client_key)),
    ]


def client_tls(certificates: Certificates | None, ca: Path | None = None) -> dict[str, Any]:
    """Return redis-py's TLS options for a client of these servers (trusting ``ca``)."""
    if certificates is None:
        return {}
    return {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": str(ca or certificates.ca),
        "ssl_certfile": str(certificates.client_cert),
        "ssl_keyfile": str(certificates.client_key),
    }


class SentinelNode(Service):
    """A ``redis-server --sentinel`` watching the primary (a failover within about 2 s)."""

    name = "sentinel"

    def __init__(
        self, directory: Path, primary_port: int, *, certificates: Certificates | None = None
    ) -> None:
        directory.mkdir(exist_ok=True)
        super().__init__(directory)
        ports = f"port {self.port}\n"
        if certificates is not None:  # TLS only, to the servers and the other sentinels too
            directives = tls_directives(certificates)
            pairs = zip(directives[::2], directives[1::2], strict=True)
            tls = "".join(f"{name[2:]} {value}\n" for name, value in pairs)
            ports = f"port 0\ntls-port {self.port}\ntls-replication yes\n{tls}"
        (directory / "sentinel.conf").write_text(
            f"{ports}bind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 4000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )

    def command(self) -> list[str]:
        return [skip_without("redis-server"), str(self.directory / "sentinel.conf"), "--sentinel"]


def _client(port: int, tls: dict[str, Any]) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, ssl=bool(tls), **tls)


def primary_port(sentinel: SentinelNode, tls: dict[str, Any] | None = None) -> int:
    """Return the port of the primary ``sentinel`` names now."""
    client = _client(sentinel.port, tls or {})
    try:
        return int(client.sentinel_get_master_addr_by_name(MASTER)[1])
    finally:
        client.close()


def replicas_confirm(node: RedisNode, tls: dict[str, Any] | None = None) -> bool:
    """Return whether a replica of ``node`` acknowledges a write within a second (``WAIT``)."""
    client = _client(node.port, tls or {})
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


def test_sentinels_and_primary_over_tls_with_client_certificates(
    tmp_path, queue_name, settings, start_worker
):
    """Everything TLS-only: tasks run, a failover is followed, a wrong CA is refused clearly."""
    certificates = make_certificates(tmp_path / "tls")
    tls = client_tls(certificates)
    primary = RedisNode(tmp_path / "primary", certificates=certificates)
    primary.start()
    replica = RedisNode(tmp_path / "replica", replica_of=primary.port, certificates=certificates)
    replica.start()
    wait_for(lambda: replicas_confirm(primary, tls), 20, what="the replica to sync over TLS")
    sentinels = [
        SentinelNode(tmp_path / f"sentinel-{n}", primary.port, certificates=certificates)
        for n in range(3)
    ]
    servers = [primary, replica, *sentinels]
    try:
        for sentinel in sentinels:
            sentinel.start()
        url = ";".join(f"sentinel://127.0.0.1:{sentinel.port}/0" for sentinel in sentinels)
        options = {
            "master_name": MASTER,
            "sentinel_kwargs": {"ssl": True, **tls},  # to the sentinels
            "replica_acks": 1,
            "replica_ack_timeout": 0.5,
        }
        settings.TQ = {
            **settings.TQ,
            "BROKER_URL": url,
            "BROKER_TRANSPORT_OPTIONS": options,
            "BROKER_USE_SSL": tls,  # to the primary
            "DEFAULT_QUEUE": queue_name,
            "LEASE_SECONDS": LEASE_SECONDS,
            "BROKER_CONNECTION_TIMEOUT": 1.0,
        }
        worker = start_worker("-P", "prefork", "-c", "1")
        before = [add.delay(n, 1) for n in range(20)]
        assert [result.get(timeout=30) for result in before] == [n + 1 for n in range(20)]

        primary.kill()
        wait_for(lambda: primary_port(sentinels[0], tls) == replica.port, 30, what="a failover")
        after = []
        deadline = time.monotonic() + 30
        while len(after) < 20:  # the new primary has no replica to WAIT for until one syncs
            try:
                after.append(add.delay(len(after), 2))
            except PublishError:
                assert time.monotonic() < deadline, "publishing never came back"
                primary.start() if primary.process.poll() is not None else time.sleep(0.2)
        assert [result.get(timeout=30) for result in after] == [n + 2 for n in range(20)]
        assert worker.process.poll() is None, worker.output()  # the same worker followed

        # a client trusting another CA is refused with the TLS library's reason, in time
        wrong = {"ssl": True, **client_tls(certificates, certificates.wrong_ca)}
        for wrong_options, reason in (
            ({**options, "sentinel_kwargs": wrong}, "certificate verify failed"),
            ({**options, "sentinel_kwargs": {"ssl": False}}, "Connection"),  # plain text
        ):
            broker = Broker(url, transport_options=wrong_options, use_ssl=tls, connect_timeout=1.0)
            started = time.monotonic()
            with pytest.raises(PublishError, match="No master found") as refused:
                broker.publish(
                    WireMessage(headers={}, body="x", content_type="text/plain"), queue=queue_name
                )
            message = str(refused.value)
            assert reason in message
            assert f"sentinel 127.0.0.1:{sentinels[0].port}" in message  # not a pool's repr
            assert len(message) < 1500
            assert time.monotonic() - started < 5
        wrong_primary = client_tls(certificates, certificates.wrong_ca)
        broker = Broker(url, transport_options=options, use_ssl=wrong_primary, connect_timeout=1.0)
        with pytest.raises(PublishError, match="certificate verify failed") as refused:
            broker.publish(
                WireMessage(headers={}, body="x", content_type="text/plain"), queue=queue_name
            )
    finally:
        for server in servers:
            server.kill()
