"""The fault-injection harness: bursts of tasks counted by their rows, and private services.

A burst is ``slow_record`` tasks (a ``start:`` row, a short sleep, an ``end:`` row), so a test
can tell a task that ran twice (two ``start:`` rows) from one that was running when its worker
died (a ``start:`` row and no ``SUCCESS`` result yet). Services that a test stops or restarts are
private instances on free ports (``redis-server``, a RabbitMQ node, a PostgreSQL cluster): the
shared services on the standard ports are never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from django_tq import states
from django_tq.models import TaskResult
from tests.conftest import REQUIRE_SERVICES, service_answers, wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import slow_record

#: the lease the fault tests run with: short, so a dead worker's messages come back quickly
LEASE_SECONDS = 3
#: an id no other test run uses, for private service names and directories
RUN = uuid.uuid4().hex[:8]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def skip_without(binary: str) -> str:
    """Return the path of ``binary``; skip (fail under TQ_REQUIRE_SERVICES=1) when missing."""
    path = shutil.which(binary) or (binary if os.access(binary, os.X_OK) else None)
    if path is None:
        if REQUIRE_SERVICES:
            pytest.fail(f"{binary} is not installed (TQ_REQUIRE_SERVICES=1)")
        pytest.skip(f"{binary} is not installed")
    return path


# -- bursts ---------------------------------------------------------------------------------------
def burst(count: int, *, seconds: float = 0.0, label: str = "b") -> list[str]:
    """Send ``count`` ``slow_record`` tasks; return their ids (every ``.delay()`` returned)."""
    return [slow_record.delay(seconds, label).id for _ in range(count)]


@dataclass(frozen=True, kw_only=True, slots=True)
class Runs:
    """What the tasks' rows say: how often each task started and finished."""

    starts: Counter[str]
    ends: Counter[str]

    @classmethod
    def read(cls) -> Runs:
        """Read every ``Execution`` row."""
        starts: Counter[str] = Counter()
        ends: Counter[str] = Counter()
        for task_id, label in Execution.objects.values_list("task_id", "label"):
            (starts if label.startswith("start:") else ends)[task_id] += 1
        return cls(starts=starts, ends=ends)

    def lost(self, ids: list[str]) -> set[str]:
        """Return the ids that never finished."""
        return {task_id for task_id in ids if not self.ends[task_id]}

    def duplicated(self) -> set[str]:
        """Return the ids that started more than once."""
        return {task_id for task_id, count in self.starts.items() if count > 1}


def finished_count() -> int:
    """Return how many tasks wrote their ``end:`` row (a cheap progress gauge)."""
    return Execution.objects.filter(label__startswith="end:").count()


def running_now(ids: list[str]) -> set[str]:
    """Return the tasks that started and have no ``SUCCESS`` result yet.

    Called right after a kill, this is what the dead worker was running: a task that wrote its
    ``end:`` row but was killed before its result was recorded runs again, by design.
    """
    started = set(
        Execution.objects.filter(label__startswith="start:").values_list("task_id", flat=True)
    )
    succeeded = set(
        TaskResult.objects.filter(task_id__in=started, state=states.SUCCESS).values_list(
            "task_id", flat=True
        )
    )
    return started - succeeded


def wait_until_finished(ids: list[str], timeout: float) -> Runs:
    """Wait until every task in ``ids`` wrote its ``end:`` row; return the rows."""
    wait_for(
        lambda: finished_count() >= len(ids) and not Runs.read().lost(ids),
        timeout,
        interval=0.25,
        what=f"{len(ids)} tasks to finish",
    )
    return Runs.read()


def assert_exactly_once(ids: list[str], runs: Runs) -> None:
    """Assert that every task ran once: none lost, none duplicated."""
    assert runs.lost(ids) == set()
    assert runs.duplicated() == set()
    assert sum(runs.ends[task_id] for task_id in ids) == len(ids)


# -- private services -----------------------------------------------------------------------------
class Service:
    """A server subprocess on a free port of 127.0.0.1, which tests stop and restart."""

    name = "service"
    start_timeout = 60.0
    #: the signal that stops the server gracefully
    stop_signal = signal.SIGTERM

    def __init__(
        self, directory: Path, *, host: str = "127.0.0.1", prefix: Sequence[str] = ()
    ) -> None:
        """A server in ``directory``, listening on ``host``; ``prefix`` runs it elsewhere
        (``ip netns exec NS``: in another test host's namespace, see tests/faults/network.py)."""
        self.directory = directory
        self.host = host
        self.prefix = list(prefix)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, *, wait: bool = True) -> None:
        """Start the server; with ``wait``, return once its port answers."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, *self.command()],
                cwd=self.directory,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the port answers (fail if the server exits first)."""
        assert self.process is not None
        wait_for(
            lambda: self.process.poll() is not None or service_answers(self.port, self.host),
            self.start_timeout,
            interval=0.1,
            what=f"{self.name} on port {self.port}",
        )
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM) and wait until its port is closed."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, self.stop_signal)  # through runuser and start scripts
            try:
                self.process.wait(self.start_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        wait_for(
            lambda: not service_answers(self.port, self.host), 10, what=f"{self.name} to close"
        )

    def restart(self) -> None:
        """Stop the server, then start it again on the same port with the same data."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the server and everything it started."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)


class RedisServer(Service):
    """``redis-server`` with an append-only file fsynced on every write.

    The queue survives a restart because Redis persists it: a Redis that loses its data loses the
    queued messages, which is the deployment's durability choice, not django_tq's.
    """

    name = "redis"

    def command(self) -> list[str]:
        return [
            skip_without("redis-server"),
            *("--port", str(self.port), "--bind", self.host, "--save", ""),
            # a test host in a namespace is not loopback; only this machine's namespaces reach it
            *("--protected-mode", "no" if self.host != "127.0.0.1" else "yes"),
            *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)),
        ]

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


class RabbitNode(Service):
    """A RabbitMQ node of its own (name, ports, data and Erlang cookie under a temp dir)."""

    name = "rabbitmq"
    start_timeout = 120.0  # a first boot takes 20-30 s on a loaded 2-core machine
    server = "/usr/lib/rabbitmq/bin/rabbitmq-server"

    def __init__(
        self, directory: Path, *, host: str = "127.0.0.1", prefix: Sequence[str] = ()
    ) -> None:
        super().__init__(directory, host=host, prefix=prefix)
        self.dist_port = free_port()
        for sub in ("home", "mnesia", "log"):
            (directory / sub).mkdir(exist_ok=True)
        (directory / "enabled_plugins").write_text("")
        # guest may log in only over loopback, unless the node is another test host's
        remote = host != "127.0.0.1"
        (directory / "rabbitmq.conf").write_text("loopback_users.guest = false\n" if remote else "")

    def command(self) -> list[str]:
        return [skip_without(self.server)]

    def environment(self) -> dict[str, str]:
        directory = self.directory
        return {
            **os.environ,
            "HOME": str(directory / "home"),  # its own .erlang.cookie
            "RABBITMQ_NODENAME": f"tqtest-{RUN}-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}//"


class PostgresCluster(Service):
    """A throwaway PostgreSQL cluster (``initdb`` as the ``postgres`` user into a temp dir)."""

    name = "postgres"
    stop_signal = signal.SIGINT  # a fast shutdown: SIGTERM would wait for every client to leave
    bin = Path("/usr/lib/postgresql/15/bin")

    def __init__(
        self, directory: Path, *, host: str = "127.0.0.1", prefix: Sequence[str] = ()
    ) -> None:
        super().__init__(directory, host=host, prefix=prefix)
        self.data = directory / "data"
        skip_without(str(self.bin / "initdb"))
        shutil.chown(directory, "postgres")
        subprocess.run(
            [
                *self._as_postgres(),
                *(str(self.bin / "initdb"), "-D", str(self.data)),
                *("-U", "postgres", "--auth=trust", "--no-sync"),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        # clients on the subnet of its address too (a test host in a network namespace)
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all samenet trust\n")

    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def command(self) -> list[str]:
        return [
            *self._as_postgres(),
            *(str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)),
            *("-c", f"listen_addresses={self.host}", "-c", "unix_socket_directories="),
            *("-c", "fsync=off"),  # a restart is a clean shutdown: nothing needs the flushes
        ]

    def wait_ready(self) -> None:
        """Wait until the cluster accepts queries (its port opens while it is still starting)."""
        super().wait_ready()

        def accepts() -> bool:
            try:
                self.sql("SELECT 1")
            except Exception:  # "the database system is starting up", and friends
                return False
            return True

        wait_for(accepts, self.start_timeout, interval=0.1, what=f"{self.name} to accept queries")

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement on the cluster (a connection of its own); return the rows."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user="postgres", dbname=database, autocommit=True
        ) as conn:
            cursor = conn.execute(statement)
            return list(cursor.fetchall()) if cursor.description else []


def postgres_connection(port: int, database: str, options: dict[str, Any]) -> Any:
    """Return an unconnected Django connection to ``database`` on 127.0.0.1:``port``."""
    from django.db import connection
    from django.db.backends.postgresql.base import DatabaseWrapper

    settings = {
        **connection.settings_dict,
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": port,
        "NAME": database,
        "USER": "postgres",
        "OPTIONS": options,
    }
    return DatabaseWrapper(settings, alias=f"{database}-{port}")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` of this test's own, on a free port."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


#: the RabbitMQ node of this session: it boots while the other fault tests run (20-30 s)
_rabbit: RabbitNode | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start booting the private RabbitMQ node if a selected test will need it."""
    global _rabbit
    wanted = any("private_rabbitmq" in getattr(item, "fixturenames", ()) for item in session.items)
    if wanted and os.access(RabbitNode.server, os.X_OK):
        _rabbit = RabbitNode(Path(tempfile.mkdtemp(prefix="tq-faults-rabbitmq-")))
        _rabbit.start(wait=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _rabbit is not None:
        _rabbit.kill()
        shutil.rmtree(_rabbit.directory, ignore_errors=True)


@pytest.fixture
def private_rabbitmq() -> RabbitNode:
    """The session's own RabbitMQ node (durable queues, persistent messages), once it answers."""
    if _rabbit is None:
        if REQUIRE_SERVICES:
            pytest.fail(f"{RabbitNode.server} is not installed (TQ_REQUIRE_SERVICES=1)")
        pytest.skip(f"{RabbitNode.server} is not installed")
    _rabbit.wait_ready()
    return _rabbit
