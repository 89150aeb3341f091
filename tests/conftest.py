"""Fixtures: real worker subprocesses, broker URLs for every transport that answers."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection

from tests.settings import REDIS_DB

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("TQ_REQUIRE_SERVICES") == "1"

REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"  # a database per xdist worker
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def command_output(*args: str) -> str:
    """Run a management command in this process; return what it wrote to stdout."""
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def child_pids(pid: int) -> list[int]:
    """Return the pids of the child processes of ``pid`` (a prefork worker's children)."""
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(child) for child in handle.read().split()]


def service_answers(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether something listens on ``host``:``port`` (127.0.0.1 unless a test's namespace)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(name: str, port: int) -> None:
    """Skip (or fail, under TQ_REQUIRE_SERVICES=1) when the service does not answer."""
    if not service_answers(port):
        message = f"{name} is not answering on 127.0.0.1:{port}"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (TQ_REQUIRE_SERVICES=1)")
        pytest.skip(message)


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class WorkerProcess:
    """A ``manage.py tqworker`` subprocess against the test database."""

    command = "tqworker"

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, prefix: Sequence[str] = ()
    ) -> None:
        """Start it; ``prefix`` runs it elsewhere (``ip netns exec NS``: on another test host)."""
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "django", self.command, *args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        wait_for(
            lambda: "ready" in self.output() or self.process.poll() is not None,
            timeout,
            what="worker ready",
        )
        if self.process.poll() is not None:
            raise AssertionError(
                f"worker exited early ({self.process.returncode}):\n{self.output()}"
            )
        return self

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def kill_tree(self) -> None:
        """SIGKILL the worker and all its children (its session)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def stop(self, timeout: float = 30.0, *, send_sigterm: bool = True) -> int:
        """SIGTERM the worker (unless ``send_sigterm`` is false: sent already); wait; return its code."""
        if self.process.poll() is None:
            if send_sigterm:
                self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_tree()
        self._log.close()
        return self.process.returncode


def stop_all(processes: list[WorkerProcess]) -> None:
    """Stop the processes a test left running: SIGTERM to all at once, then wait for each."""
    for process in processes:
        process.signal(signal.SIGTERM)  # a no-op for those that exited
    for process in processes:
        process.stop(send_sigterm=False)
        process.kill_tree()


def _json_settings(values: dict[str, Any]) -> str:
    """Return the JSON-able part of a TQ dict (what a worker subprocess can be given)."""
    plain = {}
    for key, value in values.items():
        try:
            json.dumps(value)
        except TypeError:
            continue
        plain[key] = value
    return json.dumps(plain)


def worker_env() -> dict[str, str]:
    """The environment a worker subprocess needs to share this test's database and TQ settings."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["TQ_TEST_DB_NAME"] = str(connection.settings_dict["NAME"])
    env["TQ_SETTINGS_JSON"] = _json_settings(django_settings.TQ)
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("TQ_LOG_LEVEL", "INFO")
    return env


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``tqworker`` subprocesses with the test's current settings; all stop at the end."""
    workers: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> WorkerProcess:
        log = tmp_path / f"worker-{len(workers)}.log"
        worker = WorkerProcess(list(args), {**worker_env(), **(env or {})}, log)
        workers.append(worker)
        return worker.wait_ready() if ready else worker

    yield start
    stop_all(workers)
    for index, worker in enumerate(workers):
        print(
            f"--- worker {index} output ---\n{worker.output()[-5000:]}"
        )  # shown when a test fails


TRANSPORTS = ["django", "redis", "amqp"]


@pytest.fixture(params=TRANSPORTS)
def broker_url(request: pytest.FixtureRequest, settings: Any, queue_name: str) -> Iterator[str]:
    """Each transport in turn (Redis and RabbitMQ when they answer), on a queue of its own.

    Sets TQ['BROKER_URL'] and TQ['DEFAULT_QUEUE'] (so tasks and workers use the test's queue), and
    deletes the queue afterwards.
    """
    url = {"django": "django://", "redis": REDIS_URL, "amqp": AMQP_URL}[request.param]
    if request.param == "redis":
        require_service("Redis", 6379)
    elif request.param == "amqp":
        require_service("RabbitMQ", 5672)
    settings.TQ = {**settings.TQ, "BROKER_URL": url, "DEFAULT_QUEUE": queue_name}
    yield url
    if request.param != "django":
        delete_queues(url, [queue_name, f"{queue_name}-other"])


@pytest.fixture(scope="session")
def _fanout_exchanges() -> Iterator[None]:
    """Delete this run's RabbitMQ fanout exchanges (named by its CONTROL_EXCHANGE) at the end."""
    yield
    from django_tq.broker import Broker

    prefix = django_settings.TQ["CONTROL_EXCHANGE"]
    with Broker(AMQP_URL).connection() as conn:
        for topic in ("control", "events", "test", "other"):  # the last two: test_fanout.py
            try:
                conn.default_channel.exchange_delete(f"{prefix}.{topic}")
            except Exception:
                conn.close()  # a closed channel: the next name on a new one
                conn.connect()


@pytest.fixture(params=["postgres", "redis", "amqp"])
def fanout_url(request: pytest.FixtureRequest, settings: Any, queue_name: str) -> Iterator[str]:
    """Each broker with a fanout channel (remote control, events): django:// only on PostgreSQL."""
    if request.param == "postgres":
        if connection.vendor != "postgresql":
            pytest.skip("NOTIFY needs PostgreSQL (TQ_TEST_DB=postgres)")
        url = "django://"
    elif request.param == "redis":
        require_service("Redis", 6379)
        url = REDIS_URL
    else:
        require_service("RabbitMQ", 5672)
        request.getfixturevalue("_fanout_exchanges")
        url = AMQP_URL
    settings.TQ = {**settings.TQ, "BROKER_URL": url, "DEFAULT_QUEUE": queue_name}
    yield url


def delete_queues(url: str, names: list[str]) -> None:
    """Remove test queues from a real broker."""
    from django_tq.broker import Broker

    broker = Broker(url)
    with broker.connection() as conn:
        channel = conn.default_channel
        for name in names:
            try:
                channel.queue_delete(name)
            except Exception:
                channel = conn.channel()


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test uses."""
    return f"q-{uuid.uuid4().hex[:10]}"
