"""``django://`` through PgBouncer in transaction pooling, in front of the shared PostgreSQL.

The test's own database on the shared server, a ``pgbouncer`` of its own on a free port with two
server connections per database, producers and workers connecting through it. ``LISTEN`` does not
work there: the consumers find that out and poll; their settings (``enable_sort``,
``synchronous_commit``) must not reach the other clients the pooler serves on the same server
connections.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from django_tq.transport import pooling
from tests.conftest import require_service
from tests.faults.conftest import RUN, Service, postgres_connection, skip_without
from tests.faults.pg_client import Client

pytestmark = pytest.mark.slow

DATABASE = f"tq_pgbouncer_{RUN}"
UPSTREAM_PORT = 5432


def upstream_sql(statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
    """Run one statement on the shared PostgreSQL directly."""
    with psycopg.connect(
        host="127.0.0.1", port=UPSTREAM_PORT, user="postgres", dbname=database, autocommit=True
    ) as conn:
        cursor = conn.execute(statement)
        return list(cursor.fetchall()) if cursor.description else []


class PgBouncer(Service):
    """``pgbouncer`` in transaction pooling mode, two server connections per database."""

    name = "pgbouncer"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        skip_without("pgbouncer")
        (directory / "users.txt").write_text('"postgres" ""\n')
        (directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={UPSTREAM_PORT}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
            "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres")  # pgbouncer refuses to run as root
            for path in directory.iterdir():
                shutil.chown(path, "postgres")

    def command(self) -> list[str]:
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return [*run_as, skip_without("pgbouncer"), str(self.directory / "pgbouncer.ini")]

    def sql(self, statement: str, database: str = DATABASE) -> list[tuple[Any, ...]]:
        """Run one statement through the pooler (a client connection of its own)."""
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database, autocommit=True
        ) as conn:
            cursor = conn.execute(statement)
            return list(cursor.fetchall()) if cursor.description else []


@pytest.fixture
def bouncer() -> Iterator[PgBouncer]:
    require_service("PostgreSQL", UPSTREAM_PORT)
    skip_without("pgbouncer")
    upstream_sql(f"CREATE DATABASE {DATABASE}")
    # Not under tmp_path: the postgres user cannot enter pytest's private temp directories.
    directory = Path(tempfile.mkdtemp(prefix="tq-pgbouncer-"))
    server = PgBouncer(directory)
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)
        upstream_sql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def _wrapper(port: int) -> Any:
    return postgres_connection(port, DATABASE, {})


def test_the_probe_tells_a_pooled_connection_from_a_direct_one(bouncer, django_db_blocker):
    for port, hears in ((UPSTREAM_PORT, True), (bouncer.port, False)):
        db = _wrapper(port)
        with django_db_blocker.unblock():
            try:
                db.ensure_connection()
                assert pooling.hears_notify(db, lambda port=port: _wrapper(port)) is hears
            finally:
                db.close()


def _session_settings(bouncer: PgBouncer) -> set[tuple[str, str]]:
    """Return the settings several fresh clients of the pooler see (both server connections)."""
    seen = set()
    for _ in range(6):
        seen |= set(
            bouncer.sql(
                "SELECT current_setting('enable_sort'), current_setting('synchronous_commit')"
            )
        )
    return seen


@pytest.mark.timeout(300)
def test_a_worker_drains_through_transaction_pooling(bouncer, queue_name, start_worker):
    client = Client(bouncer, queue_name, DATABASE)
    client.run("-m", "django", "migrate", "--run-syncdb", "--no-input", "-v", "0")
    worker = start_worker("-P", "prefork", "-c", "2", env=client.env)
    ids = client.produce(200)  # through the pooler too
    runs = client.wait_until_finished(ids, 120)
    assert runs.lost(ids) == set()
    assert runs.duplicated() == set()  # claims and leases hold: each task ran once
    assert client.sql("SELECT count(*) FROM django_tq_queuemessage")[0][0] == 0  # all acked
    # Idle consumers poll (a LISTEN would sit on a server connection others use): a task sent
    # while every consumer is idle still starts.
    late = client.produce(1)
    client.wait_until_finished(ids + late, 30)
    assert _session_settings(bouncer) == {("on", "on")}  # nothing leaked to other clients
    assert worker.process.poll() is None, worker.output()
