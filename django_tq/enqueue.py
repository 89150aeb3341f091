"""The one place that publishes a task message.

``enqueue(message)`` serializes (so bad arguments fail at the call site), enforces the size
limit, records the QUEUED result row, and publishes — at once, or when the caller's outermost
``transaction.atomic()`` on the alias commits (``PUBLISH_ON_COMMIT``), never on rollback. With the
``django://`` transport on the caller's alias the message row itself is written inside the
caller's transaction, which gives the same guarantee without waiting for the commit; with another
broker and ``OUTBOX``, an outbox row is (see ``outbox.py``). A message
with a ``unique_key`` first takes its lock (``unique.py``) in that transaction too; when another
task holds the key, nothing is recorded or sent and that task's id is returned.
"""

from __future__ import annotations

import logging
import traceback as tb
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from django_tq import message as wire_format
from django_tq import outbox, parking, serialization, signals, signing, states, tracing, unique
from django_tq.broker import Broker, get_broker
from django_tq.broker.retry_policy import DEFAULT_RETRY_POLICY, RetryPolicy
from django_tq.conf import tq_settings
from django_tq.exceptions import PayloadTooLarge, PublishError
from django_tq.message import TaskMessage, WireMessage
from django_tq.result_backends import get_backend

logger = logging.getLogger("django_tq.enqueue")


class Sink:
    """Receives messages instead of the broker (``django_tq.testing.capture`` installs one)."""

    def add(self, message: TaskMessage) -> None:
        """Take a message that would have been published now."""

    def pending(self, publish: PendingPublish) -> None:
        """Note a publish that waits for a commit."""


_sinks: list[Sink] = []


def install_sink(sink: Sink) -> None:
    """Route every publish of this process to ``sink`` until :func:`remove_sink`."""
    _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    """Stop routing publishes to ``sink``."""
    _sinks.remove(sink)


@dataclass(frozen=True, slots=True)
class PendingPublish:
    """A publish waiting for the commit of an atomic block (an ``on_commit`` callback)."""

    message: TaskMessage
    wire: WireMessage
    broker: Broker
    policy: RetryPolicy = DEFAULT_RETRY_POLICY

    @property
    def task_id(self) -> str:
        """Return the id of the task waiting for the commit."""
        return self.message.id

    def __call__(self) -> None:
        try:
            publish_now(self.message, self.wire, self.broker, self.policy)
        except PublishError as exc:
            logger.error(
                "Task %s[%s] was not published after commit: %s",
                self.message.task,
                self.message.id,
                exc,
            )
            unique.release(self.message)
            get_backend().set_state(
                self.message.id,
                states.FAILURE,
                result=serialization.exception_to_data(exc),
                traceback=tb.format_exc(),
            )


@dataclass(frozen=True, slots=True)
class OutboxPublish:
    """Publish an outbox row right after the commit; a worker's relay sends it if this fails."""

    message: TaskMessage
    wire: WireMessage
    broker: Broker
    row_id: int
    alias: str

    @property
    def task_id(self) -> str:
        """Return the id of the task waiting for the commit."""
        return self.message.id

    def __call__(self) -> None:
        try:
            outbox.take(
                self.row_id,
                lambda: publish_now(self.message, self.wire, self.broker),
                using=self.alias,
            )
        except Exception as exc:
            logger.warning(
                "Task %s[%s] waits in the outbox for a worker's relay: publishing after "
                "commit failed: %s",
                self.message.task,
                self.message.id,
                exc,
            )


@dataclass(frozen=True, slots=True)
class CommitMarker:
    """Marks a message row written inside an open transaction: a ``django://`` queue row or a
    parked row, invisible to workers until the commit."""

    task_id: str

    def __call__(self) -> None:
        """Nothing to do at commit: the row becomes visible by itself."""


def default_alias(broker: Broker | None = None) -> str:
    """Return the alias whose transaction a publish follows when ``using=`` is not given."""
    broker = broker or get_broker()
    return broker.database_alias or "default"


def encode(message: TaskMessage) -> WireMessage:
    """Serialize ``message``, enforce ``MAX_PAYLOAD_BYTES``, and sign it (``SIGNING``)."""
    wire = wire_format.encode(message)
    limit = tq_settings.MAX_PAYLOAD_BYTES
    if wire.size > limit:
        raise PayloadTooLarge(
            f"Task {message.task} message is {wire.size} bytes, over TQ['MAX_PAYLOAD_BYTES'] ({limit}). "
            "Pass an id and load the data in the task instead."
        )
    if tq_settings.SIGNING:
        return signing.sign(wire)
    return wire


def enqueue(
    message: TaskMessage,
    *,
    using: str | None = None,
    owner_id: Any = None,
    on_commit: bool | None = None,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> str:
    """Record and publish ``message`` (see the module docstring for when it is published).

    Return the id of the task that will run: ``message.id``, or for a ``unique_key`` already
    held, the id of the task holding it (then nothing is sent). ``on_commit`` overrides
    ``PUBLISH_ON_COMMIT`` for this call (``delay_on_commit`` passes True); ``policy`` says how
    a publish to an unreachable broker retries.
    """
    broker = get_broker()
    alias = using or default_alias(broker)
    message = tracing.inject(message)  # TQ["OTEL"]: the producer span's traceparent header
    wire = encode(message)
    if message.unique_key is not None:
        holder = unique.acquire(message, using=alias)
        if holder != message.id and not message.retries:  # a retry always runs
            logger.debug(
                "Not sending %s[%s]: %s holds its unique key", message.task, message.id, holder
            )
            return holder
    if tq_settings.TRACK_ENQUEUED and not message.ignore_result:
        get_backend().mark_queued(message, owner_id=owner_id, using=alias)
    in_transaction = connections[alias].in_atomic_block
    wait_for_commit = tq_settings.PUBLISH_ON_COMMIT if on_commit is None else on_commit
    if parking.should_park(message) and not _sinks:
        parking.park(message, wire, using=alias)  # commits or rolls back with the caller
        if in_transaction:
            transaction.on_commit(CommitMarker(message.id), using=alias)
    elif broker.database_alias == alias and not _sinks:
        # The message row is written by the caller's connection: it commits with the caller.
        publish_now(message, wire, broker)
        if in_transaction:
            transaction.on_commit(CommitMarker(message.id), using=alias)
    elif in_transaction and wait_for_commit and tq_settings.OUTBOX and not _sinks:
        row_id = outbox.write(message, wire, using=alias)  # commits or rolls back with the caller
        transaction.on_commit(OutboxPublish(message, wire, broker, row_id, alias), using=alias)
    elif in_transaction and wait_for_commit:
        pending = PendingPublish(message, wire, broker, policy)
        for sink in _sinks:
            sink.pending(pending)
        transaction.on_commit(pending, using=alias)
    else:
        try:
            publish_now(message, wire, broker, policy)
        except PublishError as exc:
            unique.release(message)
            if tq_settings.TRACK_ENQUEUED and not in_transaction:
                get_backend().set_state(
                    message.id, states.FAILURE, result=serialization.exception_to_data(exc)
                )
            raise
    signals.send(signals.task_enqueued, sender=message.task, message=message)
    return message.id


def publish_now(
    message: TaskMessage,
    wire: WireMessage,
    broker: Broker,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> None:
    """Hand ``wire`` to the broker now (raises ``PublishError`` as ``policy`` says)."""
    signals.send(
        signals.before_task_publish, sender=message.task, message=message, headers=wire.headers
    )
    if _sinks:
        _sinks[-1].add(message)
        return
    not_before = None
    if message.eta is not None and message.eta > timezone.now():
        not_before = message.eta.isoformat()
    broker.publish(
        wire, queue=message.queue, priority=message.priority, not_before=not_before, policy=policy
    )
    signals.send(signals.after_task_publish, sender=message.task, message=message)


def is_waiting_for_commit(task_id: str) -> bool:
    """Return whether ``task_id``'s publish waits for an atomic block of this thread to commit.

    On any alias: a publish waiting in an ``on_commit`` callback, or a row no worker can see
    before the commit (a ``django://`` message, a parked message, an outbox row).
    """
    return any(
        isinstance(func, PendingPublish | OutboxPublish | CommitMarker) and func.task_id == task_id
        for connection in connections.all(initialized_only=True)
        if connection.in_atomic_block
        for _sids, func, *_ in connection.run_on_commit
    )
