"""A worker inside this process, for tests: consumers in threads, or one run in the caller.

``EmbeddedWorker`` is a real worker (the ``threads`` pool's consumers, the worker's housekeeping:
parked ETAs, revocations, heartbeats) running in threads of the test process until ``stop()``:
the ``tq_worker`` pytest fixture. :func:`run_until_empty` runs one consumer in the calling thread
until no message is left to run: ``django_tq.testing.run_worker_until_empty()``.

Both use their own database connections (one per thread, and the ``django://`` transport's own):
they see only committed rows. A test must therefore commit what the tasks read (pytest-django's
``transactional_db``, Django's ``TransactionTestCase``); inside ``TestCase``'s transaction use
``django_tq.testing.capture()`` instead.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from django.db import connections

from django_tq import signals, sqlite
from django_tq.broker import Broker, get_broker
from django_tq.queue_names import routed_queues
from django_tq.worker.consumer import Consumer, ConsumerConfig
from django_tq.worker.pool import make_pool
from django_tq.worker.worker import Worker, WorkerConfig, run_consumer

logger = logging.getLogger("django_tq.worker")


def default_queues() -> list[str]:
    """Return every queue a task can be routed to (see :mod:`django_tq.queue_names`)."""
    return sorted(routed_queues())


def refuse_open_transactions(what: str) -> None:
    """Raise if this thread is inside ``atomic()``: a worker's connections would not see it."""
    open_aliases = [
        connection.alias
        for connection in connections.all(initialized_only=True)
        if connection.in_atomic_block
    ]
    if open_aliases:
        raise RuntimeError(
            f"{what} runs tasks through the worker's own database connections, which cannot see "
            f"what this thread has not committed (an open transaction on {', '.join(open_aliases)}"
            " — Django's TestCase keeps one for the whole test). Use TransactionTestCase, or "
            "pytest-django's transactional_db / django_db(transaction=True); inside TestCase, use "
            "django_tq.testing.capture() and run_all()."
        )


def refuse_in_memory_sqlite(what: str) -> None:
    """Raise if a database is SQLite in memory: its connections share one cache and lock whole
    tables ("database table is locked", which no busy timeout waits out)."""
    in_memory = [
        alias
        for alias in connections
        if connections[alias].vendor == "sqlite"
        and not sqlite.is_shared_file(connections[alias].settings_dict)
    ]
    if in_memory:
        raise RuntimeError(
            f"{what} needs a SQLite database in a file, so that its connections and the test's can "
            f"work at once; {', '.join(in_memory)} is in memory (Django's default test database "
            "for SQLite). Give it a file: DATABASES[alias]['TEST'] = {'NAME': 'test.sqlite3'}."
        )


class EmbeddedWorker:
    """A worker whose consumers are threads of this process, between ``start()`` and ``stop()``.

    ``queues`` default to every queue tasks are routed to; the broker to the shared one
    (``TQ["BROKER_URL"]``, ``django://`` by default).
    """

    def __init__(
        self,
        broker: Broker | None = None,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 1,
        hostname: str | None = None,
        prefetch_multiplier: int = 1,
        housekeeping_interval: float = 0.1,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.broker = broker or get_broker()
        self.queues = tuple(queues or default_queues())
        self.hostname = hostname or f"tq-embedded-{os.getpid()}@{socket.gethostname()}"
        self.worker = Worker(
            self.broker,
            WorkerConfig(
                queues=self.queues,
                concurrency=concurrency,
                pool="threads",
                hostname=self.hostname,
                prefetch_multiplier=prefetch_multiplier,
                heartbeat_interval=1.0,
            ),
        )
        # consumers that notice stop() within a tenth of a second (the worker's wait a second)
        consumer_config = ConsumerConfig(
            queues=self.queues,
            prefetch=max(1, prefetch_multiplier),
            hostname=self.hostname,
            drain_timeout=0.1,
        )
        target = functools.partial(run_consumer, self.broker, consumer_config)
        self.worker.pool = make_pool("threads", target, concurrency)
        self.housekeeping_interval = housekeeping_interval
        self.shutdown_timeout = shutdown_timeout
        self._stopped = threading.Event()
        self._housekeeping: threading.Thread | None = None

    @property
    def processed(self) -> int:
        """Return how many tasks the consumers finished."""
        return self.worker.pool.processed()

    def start(self) -> EmbeddedWorker:
        """Start the consumers and the housekeeping thread; return self."""
        if self._housekeeping is not None:
            raise RuntimeError("This EmbeddedWorker was started already.")
        refuse_open_transactions("An embedded worker")
        refuse_in_memory_sqlite("An embedded worker")
        self.worker.tick(time.monotonic())  # heartbeat, due parked messages, before consuming
        self.worker.pool.start()
        self._housekeeping = threading.Thread(
            target=self._run_housekeeping, name="django_tq-embedded-housekeeping", daemon=True
        )
        self._housekeeping.start()
        signals.send(signals.worker_ready, sender=self.worker)
        logger.info("Embedded worker %s consuming %s", self.hostname, ",".join(self.queues))
        return self

    def _run_housekeeping(self) -> None:
        try:
            while not self._stopped.wait(self.housekeeping_interval):
                self.worker.tick(time.monotonic())  # every step is guarded: it never raises
        finally:
            connections.close_all()

    def stop(self) -> None:
        """Let running tasks finish, stop the consumers; raise if one does not in time."""
        if self._housekeeping is None:
            return
        self.worker.stop_requested.set()
        self.worker.pool.stop()
        finished = self.worker.pool.join(self.shutdown_timeout)
        self._stopped.set()
        self._housekeeping.join(self.shutdown_timeout)
        self._housekeeping = None
        self.worker.heartbeat(stopped=True)
        signals.send(signals.worker_shutdown, sender=self.worker)
        if not finished:
            raise RuntimeError(
                f"The embedded worker's tasks {self.worker.pool.running_tasks()} still run "
                f"{self.shutdown_timeout:g} s after it was asked to stop."
            )

    def __enter__(self) -> EmbeddedWorker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class _UntilEmpty(Consumer):
    """A consumer that stops after two ticks in a row ran nothing."""

    idle_ticks = 2

    def __init__(self, broker: Broker, config: ConsumerConfig, limit: int) -> None:
        super().__init__(broker, config)
        self.limit = limit
        self._idle = 0

    def tick(self) -> None:
        before = self.processed
        super().tick()
        self._idle = self._idle + 1 if self.processed == before else 0
        if self.processed >= self.limit:
            self.stop()
            raise RuntimeError(
                f"run_worker_until_empty() ran {self.limit} tasks and the queue is not empty yet "
                "(a task that enqueues itself?)"
            )
        if self._idle >= self.idle_ticks:
            self.stop()


def run_until_empty(
    *,
    queues: Sequence[str] | None = None,
    broker: Broker | None = None,
    limit: int = 10_000,
    hostname: str | None = None,
) -> int:
    """Run queued messages here, through the worker's consumer, until none is left to run.

    What the tasks enqueue runs too. Messages whose ETA is still ahead, or that wait for a
    rate-limit token, stay queued. Return how many tasks ran.
    """
    refuse_open_transactions("run_worker_until_empty()")
    refuse_in_memory_sqlite("run_worker_until_empty()")
    consumer = _UntilEmpty(
        broker or get_broker(),
        ConsumerConfig(
            queues=tuple(queues or default_queues()),
            prefetch=1,
            hostname=hostname or f"tq-until-empty-{os.getpid()}@{socket.gethostname()}",
            drain_timeout=0.05,
        ),
        limit,
    )
    consumer.run()
    return consumer.processed


__all__ = [
    "EmbeddedWorker",
    "refuse_in_memory_sqlite",
    "refuse_open_transactions",
    "run_until_empty",
]
