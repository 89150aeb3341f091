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
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from django_tq import message as wire_format
from django_tq import outbox, parking, serialization, signals, signing, states, tracing, unique
from django_tq.broker import Broker, compression, get_broker
from django_tq.broker.retry_policy import DEFAULT_RETRY_POLICY, RetryPolicy
from django_tq.conf import tq_settings
from django_tq.exceptions import PayloadTooLarge, PublishError
from django_tq.message import TaskMessage, WireMessage
from django_tq.outgoing import Outgoing
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
    """A publish waiting for the commit of an atomic block (an ``on_commit`` callback).

    With a ``burst`` (the usual case) the callback only joins it: the burst, which runs after
    every publish of the transaction, records and sends them together. A publish whose savepoint
    rolled back is dropped by Django with its callback, so it never joins.
    """

    message: TaskMessage
    wire: WireMessage
    broker: Broker
    policy: RetryPolicy = DEFAULT_RETRY_POLICY
    burst: CommitBurst | None = None
    owner_id: Any = None
    track: bool = False

    @property
    def task_id(self) -> str:
        """Return the id of the task waiting for the commit."""
        return self.message.id

    def __call__(self) -> None:
        if self.burst is not None:
            self.burst.add(self.message, self.wire, owner_id=self.owner_id, track=self.track)
            return
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


class Burst:
    """Messages published together: their QUEUED rows in one statement, then one broker round.

    On RabbitMQ the burst is published and its publisher confirms waited for once; on
    ``redis://`` it is one pipeline, on ``django://`` one ``INSERT``. :meth:`send` returns the
    ids the broker took; it raises :class:`PublishError` (``failed``: the ids it did not take,
    whose results are set to FAILURE and unique locks released) — a message is never reported
    sent (``after_task_publish``) before the broker has it.
    """

    def __init__(self, broker: Broker, policy: RetryPolicy = DEFAULT_RETRY_POLICY) -> None:
        self.broker = broker
        self.policy = policy
        self._items: list[tuple[TaskMessage, WireMessage]] = []
        self._queued: list[tuple[TaskMessage, Any]] = []
        #: the ids the broker took, over every send
        self.confirmed: list[str] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(
        self, message: TaskMessage, wire: WireMessage, *, owner_id: Any = None, track: bool = False
    ) -> None:
        """Take ``message`` for the next :meth:`send`; ``track``: record its QUEUED row then."""
        self._items.append((message, wire))
        if track:
            self._queued.append((message, owner_id))

    def send(self) -> list[str]:
        """Record the QUEUED rows and publish every message taken since the last send."""
        items, queued = self._items, self._queued
        self._items, self._queued = [], []
        if not items:
            return []
        if queued:
            get_backend().mark_queued_many(queued)
        for message, wire in items:
            signals.send(
                signals.before_task_publish,
                sender=message.task,
                message=message,
                headers=wire.headers,
            )
        now = timezone.now()
        burst = [
            Outgoing(
                wire=wire,
                queue=message.queue,
                label=message.id,
                priority=message.priority,
                not_before=message.eta.isoformat() if message.eta and message.eta > now else None,
            )
            for message, wire in items
        ]
        try:
            self.broker.publish_many(burst, policy=self.policy)
        except PublishError as exc:
            failed = set(exc.failed) if exc.failed else {message.id for message, _ in items}
            exc.failed = tuple(message.id for message, _ in items if message.id in failed)
            for message, _wire in items:
                if message.id in failed:
                    unique.release(message)
                    if queued:
                        get_backend().set_state(
                            message.id,
                            states.FAILURE,
                            result=serialization.exception_to_data(exc),
                        )
                else:
                    self.confirmed.append(message.id)
                    signals.send(signals.after_task_publish, sender=message.task, message=message)
            raise
        for message, _wire in items:
            signals.send(signals.after_task_publish, sender=message.task, message=message)
        sent = [message.id for message, _ in items]
        self.confirmed.extend(sent)
        return sent


class CommitBurst(Burst):
    """The publishes one transaction asked for, sent as one burst right after its commit.

    Its ``on_commit`` entry is kept last in the connection's list (see :func:`_join_commit_burst`)
    and belongs to no savepoint, so it runs after every publish of the transaction that survived;
    a publish whose savepoint rolled back never joins it.
    """

    def __init__(self, broker: Broker, policy: RetryPolicy = DEFAULT_RETRY_POLICY) -> None:
        super().__init__(broker, policy)
        self.__qualname__ = "CommitBurst"  # Django's on_commit names a failing callback by it

    def __call__(self) -> None:
        try:
            self.send()
        except PublishError as exc:
            logger.error(
                "%d task(s) were not published after commit: %s (%s)",
                len(exc.failed),
                exc,
                ", ".join(exc.failed[:10]),
            )


def _join_commit_burst(
    message: TaskMessage,
    wire: WireMessage,
    broker: Broker,
    policy: RetryPolicy,
    *,
    alias: str,
    owner_id: Any,
    track: bool,
) -> PendingPublish:
    """Register ``message``'s publish for the commit on ``alias``, in the transaction's burst.

    The publish is an ``on_commit`` callback of its own, so savepoint rollbacks drop it as Django
    does; the burst's entry follows it. Publishes one after the other share one burst (its entry
    is moved behind each new one); another callback in between starts a new burst, so callbacks
    still run in the order they were registered.
    """
    hooks = connections[alias].run_on_commit
    last = hooks[-1][1] if hooks else None
    if isinstance(last, CommitBurst) and last.broker is broker and last.policy == policy:
        burst = last
        hooks.pop()
    else:
        burst = CommitBurst(broker, policy)
    pending = PendingPublish(
        message, wire, broker, policy, burst=burst, owner_id=owner_id, track=track
    )
    transaction.on_commit(pending, using=alias)
    # Django's on_commit entries are (savepoint ids, callback, robust): the burst's belongs to
    # no savepoint, so a savepoint rollback never drops it (only its members).
    hooks = connections[alias].run_on_commit
    hooks.append((set(), burst, True))  # type: ignore[arg-type]  # django-stubs: no robust flag
    return pending


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
class LatePublishFailure:
    """A ``.delay()`` that returned before its confirm (``BROKER_CONFIRM="batch"``), then failed.

    Called in the broker's confirm-collecting thread when RabbitMQ nacks the message, does not
    confirm it within ``BROKER_CONNECTION_TIMEOUT``, or the connection is lost first: logs it,
    sends ``task_publish_failed``, and writes the message to the outbox, from which any worker's
    relay publishes it again (marked, so a copy whose task already ran is skipped). Only if that
    write fails too is the task given up: its unique lock released, its result set to FAILURE.
    """

    message: TaskMessage
    wire: WireMessage
    alias: str
    track: bool

    def __call__(self, item: Outgoing, error: PublishError) -> None:
        message = self.message
        signals.send(signals.task_publish_failed, sender=message.task, message=message, exc=error)
        try:
            outbox.write(message, self.wire, using=self.alias)
        except Exception as exc:
            logger.exception(
                "Task %s[%s] is lost: %s, and writing it to the outbox failed: %r",
                message.task,
                message.id,
                error,
                exc,
            )
            unique.release(message)
            if self.track:
                get_backend().set_state(
                    message.id, states.FAILURE, result=serialization.exception_to_data(error)
                )
        else:
            logger.error(
                "Task %s[%s] was written but not taken by the broker: %s; it waits in the "
                "outbox for a worker's relay",
                message.task,
                message.id,
                error,
            )
        finally:
            connection = connections[self.alias]
            if not connection.in_atomic_block:  # the collector's own connection: not kept open
                connection.close()


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
    """Serialize ``message``, compress it (``compression``), enforce ``MAX_PAYLOAD_BYTES`` on
    what travels, and sign it (``SIGNING``)."""
    wire = plain = wire_format.encode(message)
    if message.compression:
        wire = compression.compress(plain, message.compression)
    limit = tq_settings.MAX_PAYLOAD_BYTES
    if wire.size > limit:
        raise PayloadTooLarge(
            f"Task {message.task} message is {wire.size} bytes, over TQ['MAX_PAYLOAD_BYTES'] ({limit}). "
            "Pass an id and load the data in the task instead."
        )
    if tq_settings.SIGNING:
        # Consumers verify what kombu hands them: the body decompressed, the headers as sent.
        signed = signing.sign(replace(plain, headers=wire.headers))
        return replace(wire, headers=signed.headers)
    return wire


def enqueue(
    message: TaskMessage,
    *,
    using: str | None = None,
    owner_id: Any = None,
    on_commit: bool | None = None,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    burst: Burst | None = None,
) -> str:
    """Record and publish ``message`` (see the module docstring for when it is published).

    Return the id of the task that will run: ``message.id``, or for a ``unique_key`` already
    held, the id of the task holding it (then nothing is sent). ``on_commit`` overrides
    ``PUBLISH_ON_COMMIT`` for this call (``delay_on_commit`` passes True); ``policy`` says how
    a publish to an unreachable broker retries. With a ``burst`` (a publisher's), a message
    that would be published now is taken by the burst instead, recorded and sent at its next
    ``send()``; inside a transaction every publish waiting for the commit joins the
    transaction's own burst anyway.

    The QUEUED row goes where the result backend keeps results. It is written in the caller's
    transaction when the backend writes on that alias; when it does not (results on another
    alias, or in a cache) and the publish waits for a commit, it is written after the commit,
    right before the publish, so a rollback leaves no trace anywhere.
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
    track = tq_settings.TRACK_ENQUEUED and not message.ignore_result
    in_transaction = connections[alias].in_atomic_block
    wait_for_commit = tq_settings.PUBLISH_ON_COMMIT if on_commit is None else on_commit
    record = partial(_mark_queued, message, owner_id, alias, in_transaction) if track else _skip
    if _sinks:
        record()
        _enqueue_to_sinks(message, wire, broker, policy, alias, in_transaction and wait_for_commit)
    elif parking.should_park(message):
        record()
        parking.park(message, wire, using=alias)  # commits or rolls back with the caller
        if in_transaction:
            transaction.on_commit(CommitMarker(message.id), using=alias)
    elif broker.database_alias == alias:
        # The message row is written by the caller's connection: it commits with the caller.
        if burst is not None:
            burst.add(message, wire, owner_id=owner_id, track=track)
        else:
            record(then_commits=True)
            publish_now(message, wire, broker)
        if in_transaction:
            transaction.on_commit(CommitMarker(message.id), using=alias)
    elif in_transaction and wait_for_commit and tq_settings.OUTBOX:
        record()
        row_id = outbox.write(message, wire, using=alias)  # commits or rolls back with the caller
        transaction.on_commit(OutboxPublish(message, wire, broker, row_id, alias), using=alias)
    elif in_transaction and wait_for_commit:
        _join_commit_burst(
            message, wire, broker, policy, alias=alias, owner_id=owner_id, track=track
        )
    elif burst is not None:
        burst.add(message, wire, owner_id=owner_id, track=track)
    else:
        record()
        try:
            # only a BROKER_CONFIRM="batch" publish can fail after it returned
            late = LatePublishFailure(message, wire, alias, track) if broker.confirms_late else None
            publish_now(message, wire, broker, policy, on_late_failure=late)
        except PublishError as exc:
            unique.release(message)
            if track and not in_transaction:
                get_backend().set_state(
                    message.id, states.FAILURE, result=serialization.exception_to_data(exc)
                )
            raise
    signals.send(signals.task_enqueued, sender=message.task, message=message)
    return message.id


def _skip(*, then_commits: bool = False) -> None:
    """Record nothing (``TRACK_ENQUEUED`` off, or ``ignore_result``)."""


def _mark_queued(
    message: TaskMessage,
    owner_id: Any,
    alias: str,
    in_transaction: bool,
    *,
    then_commits: bool = False,
) -> None:
    """Write ``message``'s QUEUED row: now, or after the commit on ``alias`` when the backend
    does not write in that transaction (so a rollback leaves no row behind).

    ``then_commits``: the caller commits a write on ``alias`` right after (the ``django://``
    message row). Where the backend's writes are durable with that commit (one PostgreSQL
    WAL, flushed in order), the QUEUED row does not wait for a flush of its own; nor where the
    worker's first write of the task rebuilds a lost row whole (``rebuilds_queued``).
    """
    backend = get_backend()
    if in_transaction and not backend.writes_on(alias):
        transaction.on_commit(partial(backend.mark_queued, message, owner_id=owner_id), using=alias)
    else:
        flushed_later = then_commits and backend.is_durable_with(alias)
        durable = in_transaction or not (flushed_later or backend.rebuilds_queued(owner_id))
        backend.mark_queued(message, owner_id=owner_id, durable=durable)


def _enqueue_to_sinks(
    message: TaskMessage,
    wire: WireMessage,
    broker: Broker,
    policy: RetryPolicy,
    alias: str,
    wait_for_commit: bool,
) -> None:
    """Hand ``message`` to the installed sinks (``django_tq.testing.capture``), one by one."""
    if wait_for_commit:
        pending = PendingPublish(message, wire, broker, policy)
        for sink in _sinks:
            sink.pending(pending)
        transaction.on_commit(pending, using=alias)
    else:
        publish_now(message, wire, broker, policy)


def publish_now(
    message: TaskMessage,
    wire: WireMessage,
    broker: Broker,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    *,
    on_late_failure: LatePublishFailure | None = None,
) -> None:
    """Hand ``wire`` to the broker now (raises ``PublishError`` as ``policy`` says).

    ``on_late_failure``: what a ``BROKER_CONFIRM="batch"`` publish turns into if the broker
    refuses it after this returned (see :class:`LatePublishFailure`).
    """
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
        wire,
        queue=message.queue,
        priority=message.priority,
        not_before=not_before,
        policy=policy,
        on_late_failure=on_late_failure,
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
