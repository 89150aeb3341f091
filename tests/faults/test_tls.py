"""TLS to every broker: ``rediss://``, ``amqps://`` and PostgreSQL ``sslmode`` for ``django://``.

Each test starts a server of its own that speaks only TLS, with certificates the test makes
(:mod:`tests.faults.certificates`), runs tasks through it with a real worker, and checks that a
client trusting the wrong CA is refused with an error that says so, within the connect timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db.utils import OperationalError

from django_tq.broker import Broker
from django_tq.exceptions import PublishError
from django_tq.message import WireMessage
from tests.conftest import service_answers, wait_for
from tests.faults.certificates import Certificates, make_certificates
from tests.faults.conftest import (
    PostgresCluster,
    RabbitNode,
    Service,
    free_port,
    postgres_connection,
    skip_without,
)
from tests.faults.pg_client import Client
from tests.testapp.tasks import add

pytestmark = pytest.mark.slow

CONNECT_TIMEOUT = 1.0


def _message() -> WireMessage:
    return WireMessage(headers={}, body="secret", content_type="text/plain")


def _refused_in_time(broker: Broker, queue: str, match: str) -> None:
    """Assert that a publish through ``broker`` fails loudly, naming ``match``, in bounded time."""
    started = time.monotonic()
    with pytest.raises(PublishError, match=match):
        broker.publish(_message(), queue=queue)
    assert time.monotonic() - started < CONNECT_TIMEOUT + 3  # not a hang


def _tasks_run_and_the_wrong_ca_is_refused(
    url: str,
    tls: dict[str, Any],
    wrong_tls: dict[str, Any],
    queue: str,
    settings: Any,
    start_worker: Any,
) -> None:
    """Run 20 tasks through a worker on ``url`` with ``tls``; a client with ``wrong_tls`` fails."""
    settings.TQ = {
        **settings.TQ,
        "BROKER_URL": url,
        "BROKER_USE_SSL": tls,
        "DEFAULT_QUEUE": queue,
        "BROKER_CONNECTION_TIMEOUT": CONNECT_TIMEOUT,
    }
    start_worker("-P", "prefork", "-c", "1")
    results = [add.delay(n, 1) for n in range(20)]
    assert [result.get(timeout=30) for result in results] == [n + 1 for n in range(20)]
    wrong = Broker(url, use_ssl=wrong_tls, connect_timeout=CONNECT_TIMEOUT)
    _refused_in_time(wrong, queue, "certificate verify failed")


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "tls")


# -- Redis ------------------------------------------------------------------------------------------
class TlsRedis(Service):
    """``redis-server`` on a TLS port only, requiring client certificates."""

    name = "redis-tls"

    def __init__(self, directory: Path, certificates: Certificates) -> None:
        super().__init__(directory)
        self.certificates = certificates

    def command(self) -> list[str]:
        c = self.certificates
        return [
            skip_without("redis-server"),
            *("--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(c.server_cert), "--tls-key-file", str(c.server_key)),
            *("--tls-ca-cert-file", str(c.ca), "--tls-auth-clients", "yes"),
            *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
        ]


def _redis_tls(certificates: Certificates, ca: Path) -> dict[str, Any]:
    return {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": str(ca),
        "ssl_certfile": str(certificates.client_cert),
        "ssl_keyfile": str(certificates.client_key),
    }


@pytest.mark.django_db(transaction=True)
def test_rediss_with_a_ca_and_a_client_certificate(
    tmp_path, certificates, queue_name, settings, start_worker
):
    server = TlsRedis(tmp_path, certificates)
    server.start()
    try:
        url = f"rediss://127.0.0.1:{server.port}/0"
        _tasks_run_and_the_wrong_ca_is_refused(
            url,
            _redis_tls(certificates, certificates.ca),
            _redis_tls(certificates, certificates.wrong_ca),
            queue_name,
            settings,
            start_worker,
        )
        plain = Broker(f"redis://127.0.0.1:{server.port}/0", connect_timeout=CONNECT_TIMEOUT)
        _refused_in_time(plain, queue_name, "ConnectionError")  # TLS only: plain text refused
    finally:
        server.kill()


# -- PostgreSQL -------------------------------------------------------------------------------------
DATABASE = "tq_tls"


class TlsPostgres(PostgresCluster):
    """A throwaway cluster with ``ssl=on`` that accepts TCP clients over TLS only."""

    def __init__(self, directory: Path, certificates: Certificates) -> None:
        super().__init__(directory)
        for name, source in (
            ("server.crt", certificates.server_cert),
            ("server.key", certificates.server_key),
        ):
            target = self.data / name
            shutil.copy(source, target)
            target.chmod(0o600)
            if os.geteuid() == 0:
                shutil.chown(target, "postgres")
        (self.data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 trust\n")

    def command(self) -> list[str]:
        return [*super().command(), "-c", "ssl=on"]


@pytest.fixture
def tls_postgres(certificates) -> Iterator[TlsPostgres]:
    # Not under tmp_path: the postgres user cannot enter pytest's private temp directories.
    directory = Path(tempfile.mkdtemp(prefix="tq-tls-pg-"))
    cluster = TlsPostgres(directory, certificates)
    try:
        cluster.start()
        wait_for(lambda: _accepts(cluster), 30, what="PostgreSQL to accept connections")
        cluster.sql(f"CREATE DATABASE {DATABASE}")
        yield cluster
    finally:
        cluster.kill()
        shutil.rmtree(directory, ignore_errors=True)


def _accepts(cluster: PostgresCluster) -> bool:
    try:
        cluster.sql("SELECT 1")
    except psycopg.OperationalError:  # the database system is starting up
        return False
    return True


def _postgres(port: int, options: dict[str, Any]) -> Any:
    return postgres_connection(port, DATABASE, options)


def test_django_queue_over_postgresql_tls(
    tls_postgres, certificates, queue_name, start_worker, django_db_blocker
):
    verify = {"sslmode": "verify-full", "sslrootcert": str(certificates.ca)}
    client = Client(tls_postgres, queue_name, DATABASE)
    client.env["TQ_TEST_PG_OPTIONS"] = json.dumps(verify)
    client.run("-m", "django", "migrate", "--run-syncdb", "--no-input", "-v", "0")
    start_worker("-P", "prefork", "-c", "2", env=client.env)
    ids = client.produce(50)
    runs = client.wait_until_finished(ids, 60)
    assert runs.lost(ids) == set()
    encrypted = client.sql(
        "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
        f"WHERE a.datname = '{DATABASE}'"
    )
    assert encrypted[0][0] is True and encrypted[0][1] >= 2  # the workers' connections too

    with django_db_blocker.unblock():
        wrong = _postgres(
            tls_postgres.port, {"sslmode": "verify-full", "sslrootcert": str(certificates.wrong_ca)}
        )
        started = time.monotonic()
        with pytest.raises(OperationalError, match="certificate verify failed"):
            wrong.ensure_connection()
        assert time.monotonic() - started < 5
        plain = _postgres(tls_postgres.port, {"sslmode": "disable"})
        with pytest.raises(OperationalError, match=r"no pg_hba\.conf entry"):
            plain.ensure_connection()  # the server takes TLS only
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1", port=tls_postgres.port, user="postgres", sslmode="disable"
        )


# -- RabbitMQ ---------------------------------------------------------------------------------------
class TlsRabbit(RabbitNode):
    """A RabbitMQ node of its own with a TLS listener (and its plain one, for administration)."""

    name = "rabbitmq-tls"

    def __init__(self, directory: Path, certificates: Certificates) -> None:
        super().__init__(directory)
        self.tls_port = free_port()
        (directory / "rabbitmq.conf").write_text(
            f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
            f"ssl_options.cacertfile = {certificates.ca}\n"
            f"ssl_options.certfile = {certificates.server_cert}\n"
            f"ssl_options.keyfile = {certificates.server_key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
        )


def _amqp_tls(certificates: Certificates, ca: Path) -> dict[str, Any]:
    return {
        "ca_certs": str(ca),
        "certfile": str(certificates.client_cert),
        "keyfile": str(certificates.client_key),
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": "127.0.0.1",
    }


@pytest.mark.timeout(300)
@pytest.mark.django_db(transaction=True)
def test_amqps_with_a_ca_and_a_client_certificate(
    tmp_path, certificates, queue_name, settings, start_worker
):
    (tmp_path / "rabbit").mkdir()
    node = TlsRabbit(tmp_path / "rabbit", certificates)
    node.start()
    try:
        wait_for(lambda: service_answers(node.tls_port), 120, what="the TLS listener")
        _tasks_run_and_the_wrong_ca_is_refused(
            f"amqps://guest:guest@127.0.0.1:{node.tls_port}//",
            _amqp_tls(certificates, certificates.ca),
            _amqp_tls(certificates, certificates.wrong_ca),
            queue_name,
            settings,
            start_worker,
        )
    finally:
        node.kill()
