"""Test helpers: capture enqueued tasks instead of sending them, then run them in-process.

    with capture() as queue:
        place_order(...)                      # calls charge.delay(order.id) inside atomic()
    queue.assert_enqueued(charge, args=(order.id,))
    queue.run_all()                           # runs them through the worker's execution path

``capture`` honours ``PUBLISH_ON_COMMIT`` inside ``TestCase`` (whose transaction never commits): a
task enqueued in an atomic block counts once the block is left without rolling back, and not at
all after a rollback. Messages round-trip through serialization, so non-JSON arguments fail here
as they would in production.

For tests that commit (``TransactionTestCase``), :func:`run_worker_until_empty` runs what is
really queued through the worker's consumer in this thread; the pytest fixture ``tq_worker``
runs a whole worker in threads for the length of a test (``django_tq.worker.embedded``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connections

from django_tq import message as wire_format
from django_tq.enqueue import PendingPublish, Sink, install_sink, remove_sink
from django_tq.execution import Outcome, execute, record
from django_tq.message import TaskMessage
from django_tq.worker import embedded


def _name(task: Any) -> str:
    return task if isinstance(task, str) else str(task.name)


class CapturedQueue(Sink):
    """The messages enqueued while :func:`capture` was active."""

    def __init__(self) -> None:
        self._published: list[TaskMessage] = []
        self._pending: list[PendingPublish] = []
        self.outcomes: dict[str, Outcome] = {}  #: the latest outcome of each task id
        self._ran: set[int] = set()  #: every message run (by identity: a replacement reuses its id)

    def add(self, message: TaskMessage) -> None:
        self._published.append(message)

    def pending(self, publish: PendingPublish) -> None:
        self._pending.append(publish)

    def _waiting(self) -> list[TaskMessage]:
        """Messages whose commit is pending and whose savepoint was not rolled back."""
        registered = {
            id(func)
            for connection in connections.all(initialized_only=True)
            for _, func, *_ in connection.run_on_commit
        }
        published = {id(m) for m in self._published}
        return [
            p.message
            for p in self._pending
            if id(p) in registered and id(p.message) not in published
        ]

    @property
    def messages(self) -> list[TaskMessage]:
        """Return every message that was (or will be, at commit) published, in order."""
        return [*self._published, *self._waiting()]

    def __len__(self) -> int:
        return len(self.messages)

    def filter(self, task: Any = None, **fields: Any) -> list[TaskMessage]:
        """Return the messages of ``task`` (a task or its name) whose fields match ``fields``."""
        found = []
        for message in self.messages:
            if task is not None and message.task != _name(task):
                continue
            if "args" in fields and tuple(fields["args"]) != message.args:
                continue
            if any(
                getattr(message, key) != value for key, value in fields.items() if key != "args"
            ):
                continue
            found.append(message)
        return found

    def assert_enqueued(
        self, task: Any, *, count: int | None = None, **fields: Any
    ) -> list[TaskMessage]:
        """Assert ``task`` was enqueued (``count`` times, with ``fields``); return the messages."""
        found = self.filter(task, **fields)
        if (count is None and not found) or (count is not None and len(found) != count):
            seen = [(m.task, m.args, m.kwargs) for m in self.messages]
            expected = "at least once" if count is None else f"{count} time(s)"
            raise AssertionError(
                f"Expected {_name(task)} {fields or ''} enqueued {expected}; enqueued: {seen}"
            )
        return found

    def assert_not_enqueued(self, task: Any, **fields: Any) -> None:
        """Assert ``task`` was not enqueued (with ``fields``)."""
        if self.filter(task, **fields):
            raise AssertionError(f"{_name(task)} {fields or ''} was enqueued")

    def run_all(self, *, limit: int = 1000) -> dict[str, Outcome]:
        """Run every captured message, and those they enqueue, through the worker's path."""
        install_sink(self)  # what the tasks enqueue (retries, children) is captured too
        try:
            return self._run_all(limit)
        finally:
            remove_sink(self)

    def _run_all(self, limit: int) -> dict[str, Outcome]:
        for _ in range(limit):
            todo = [m for m in self.messages if id(m) not in self._ran]
            if not todo:
                return self.outcomes
            message = todo[0]
            self._ran.add(id(message))
            decoded = wire_format.round_trip(message)
            outcome = execute(decoded, hostname="capture")
            record(decoded, outcome, worker="capture", delivery_count=1)
            self.outcomes[message.id] = outcome
        raise RuntimeError(f"run_all() ran {limit} messages and the queue is still not empty")

    def clear(self) -> None:
        """Forget every captured message."""
        self._published.clear()
        self._pending.clear()
        self.outcomes.clear()
        self._ran.clear()


@contextmanager
def capture() -> Iterator[CapturedQueue]:
    """Capture enqueued tasks (instead of sending them) inside the ``with`` block."""
    queue = CapturedQueue()
    install_sink(queue)
    try:
        yield queue
    finally:
        remove_sink(queue)


def run_worker_until_empty(
    *, queues: Sequence[str] | None = None, limit: int = 10_000, hostname: str | None = None
) -> int:
    """Run the queued tasks in this thread, through the real worker, until none is left to run.

    For ``unittest`` tests (``TransactionTestCase``: the worker's connections see committed rows
    only, so inside ``TestCase`` it raises; use :func:`capture` there). It consumes ``queues``
    (default: every queue tasks are routed to) from ``TQ["BROKER_URL"]`` with the worker's
    consumer — claim, execute, record the result, ack — so retries, chains and chords follow as
    in production, and what the tasks enqueue runs too. Messages whose ETA is still ahead stay
    queued. Returns how many tasks ran; raises after ``limit`` (a task that enqueues itself).
    """
    return embedded.run_until_empty(queues=queues, limit=limit, hostname=hostname)
