"""One consumer: claim messages, execute them, record the outcome, then ack.

Every prefork child runs one ``Consumer`` with its own broker connection and prefetch window;
the ``threads`` pool runs one per thread, ``solo`` one in the worker process. ``run()`` loops
around ``tick()``; a ``LeaseKeeper`` thread (``lease_keeper.py``) renews the leases of held
messages meanwhile. Messages are held (leased, unacked: ``holding.py``) until their ETA, and a
rate-limited task's message until the token its ``RateLimiter`` reserved is due; the consumer runs
other messages meanwhile. ``redelivery.py`` counts a redelivered message and fails one whose first
run died; ``time_limits.py`` has the soft time limit.
A broker or database outage never ends a consumer: it reconnects and retries with back-off,
logging one line when the outage starts and one when it ends (:mod:`django_tq.outage`).
A message is acked only once its outcome (a result, a dead letter, a skip) is recorded: when
handling it raises anything instead, it goes back to its queue (:meth:`Consumer._give_back`).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from django.core.signing import BadSignature
from django.db import close_old_connections, connections
from django.utils import timezone

from django_tq import celery_message, enqueue, parking, signals, signing, states, unique
from django_tq import message as wire_format
from django_tq.broker import Broker
from django_tq.broker.delivery import Delivery
from django_tq.broker.subscription import Subscription
from django_tq.conf import tq_settings
from django_tq.exceptions import DecodeError, NotRegistered
from django_tq.execution import REJECTED, Outcome, execute, record, revoked_outcome, send_revoked
from django_tq.message import TaskMessage
from django_tq.outage import TRANSIENT, Outage, describe
from django_tq.overrides import Overrides
from django_tq.rate_limits import RateLimiter
from django_tq.registry import registry
from django_tq.result_backends import get_backend
from django_tq.tasks import Task
from django_tq.worker import inventory, memory
from django_tq.worker.dead_letter import dead_letter
from django_tq.worker.holding import Holding
from django_tq.worker.lease_keeper import LeaseKeeper
from django_tq.worker.pool import Slot
from django_tq.worker.redelivery import count_deliveries, fail_if_lost, records_starts
from django_tq.worker.revocations import Revocations
from django_tq.worker.time_limits import soft_time_limit, warn_unenforced

logger = logging.getLogger("django_tq.worker")

#: seconds after a task's last use of the queue's database that the next task skips the
#: connection health check on it (see ``Consumer._close_old_connections``)
TRUSTED_FOR = 1.0

#: argument shapes a consumer remembers as accepted by their task (``Consumer._check_arguments``)
FITTING_SHAPES = 1024


class TaskObserver(Protocol):
    """What a consumer tells of each task it ran (``django_tq.metrics.tasks.TaskTally``)."""

    def observe(self, message: TaskMessage, outcome: Outcome, started_at: float) -> None:
        """Count ``outcome`` of ``message``, started at ``started_at`` (``time.time()``)."""

    def flush(self) -> None:
        """Write out what was counted (the consumer stops)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumerConfig:
    """How a consumer consumes."""

    queues: tuple[str, ...]
    prefetch: int
    hostname: str
    max_tasks: int | None = None  #: stop after this many tasks (``--max-tasks-per-child``)
    #: prefork: stop after a task that leaves the child above this many KiB resident
    max_memory_kib: int | None = None
    drain_timeout: float = 1.0
    #: ``--time-limit`` / ``--soft-time-limit``: for tasks whose message carries none
    time_limit: float | None = None
    soft_time_limit: float | None = None
    #: also run Celery protocol 2 messages (``--accept-celery``, ``TQ["ACCEPT_CELERY"]``)
    accept_celery: bool = False
    #: told of every task this consumer ran, once its outcome is recorded (the metrics)
    observer: TaskObserver | None = None


def _body_size(body: str | bytes, limit: int) -> int:
    """Return the size of ``body`` in bytes, exactly when it may be over ``limit``."""
    if isinstance(body, str) and 4 * len(body) > limit:  # UTF-8 takes at most 4 bytes a character
        return len(body.encode("utf-8"))
    return len(body)


class Consumer:
    """Claim, execute, record, ack — one message at a time, from a bounded prefetch window."""

    def __init__(
        self,
        broker: Broker,
        config: ConsumerConfig,
        *,
        stopping: Any = None,
        slot: Slot | None = None,
    ) -> None:
        self.broker = broker
        self.config = config
        #: set to stop after the running task (a ``threading.Event`` or billiard's ``Event``)
        self.stopping = stopping if stopping is not None else threading.Event()
        #: shared with the pool: what is running now, and how many tasks finished
        self.slot = slot if slot is not None else Slot(shared=False)
        self.processed = 0
        self.subscription: Subscription | None = None
        #: messages held until their ETA, or until their rate-limit token is due
        self.holding = Holding()
        self.limiter = RateLimiter()
        self.accept = list(tq_settings.ACCEPT_CONTENT)
        self.track_started = bool(tq_settings.TRACK_STARTED)
        self.max_deliveries = int(tq_settings.MAX_DELIVERIES)
        self.signing = bool(tq_settings.SIGNING)
        self.max_payload_bytes = int(tq_settings.MAX_PAYLOAD_BYTES)
        #: whether a result written just before an ack is durable with the ack (``django://``
        #: on the results' PostgreSQL alias): then the result need not wait for its own flush.
        #: A crash that forgets it forgets the ack too, and the message, back, runs again.
        #: Acks made to wait for the flush (``synchronous_commit`` on) keep results waiting too.
        self.results_durable_with_ack = not broker.transport_options.get(
            "synchronous_commit"
        ) and get_backend().is_durable_with(broker.database_alias)
        #: when a task last finished using the queue's database alias (``django://``)
        self._queue_db_used_at = -TRUSTED_FOR
        #: when the last task's ``close_old_connections()`` (after its outcome) checked every
        #: alias without a failure since (``_close_old_connections`` skips the walk just after)
        self._connections_checked_at = -TRUSTED_FOR
        self.revocations = Revocations()
        self.overrides = Overrides()
        self._warned: set[str] = set()  #: tasks whose time limits this pool cannot enforce
        #: (task, positional count, keyword names) that bound (``_check_arguments``)
        self._fitting: set[tuple[Task[Any, Any], int, frozenset[str]]] = set()
        #: what means "busy or unreachable, retry" rather than a bug
        self.transient = (*TRANSIENT, *broker.connection_errors)
        self._broker_outage = Outage(
            "Consuming from the broker", logger, transient=self.transient, max_delay=10.0
        )
        self._revocations_outage = Outage("Reading revocations", logger, transient=self.transient)
        self._rate_limit_outage = Outage(
            "Taking a rate-limit token", logger, transient=self.transient
        )
        self._handling_outage = Outage(
            "Handling a message", logger, transient=self.transient, max_delay=10.0
        )

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until :meth:`stop` (or ``max_tasks``), then give back what was not started."""
        keeper: LeaseKeeper | None = None
        self.slot.serve(functools.partial(inventory.answer, self))
        try:
            self.subscription = self._subscribe()
            keeper = LeaseKeeper(self, self._keeper_interval())
            keeper.start()
            while not self.stopping.is_set():
                self.tick()
        finally:
            if keeper is not None:
                keeper.stop()
            self._close()
            if self.config.observer is not None:
                self.config.observer.flush()

    def _keeper_interval(self) -> float:
        """Every third of the lease, and of the AMQP heartbeat where one is sent (not below 1 s)."""
        periods = [tq_settings.LEASE_SECONDS]
        if self.broker.is_amqp and self.broker.heartbeat:
            periods.append(self.broker.heartbeat)
        return max(1.0, min(periods) / 3)

    def _subscribe(self) -> Subscription:
        while True:
            # django:// declares the queue through this thread's own Django connection: one
            # broken by a database restart must be dropped, or every attempt fails on it.
            close_old_connections()
            try:
                # a Broadcast queue is consumed through this worker's own copy of it
                queues = tq_settings.QUEUES.consumed(self.config.queues, self.config.hostname)
                return self.broker.subscribe(
                    queues,
                    prefetch=self.config.prefetch,
                    on_delivery=self.on_delivery,
                    accept_celery=self.config.accept_celery,
                )
            except self.broker.connection_errors as exc:
                if self.stopping.is_set():
                    raise
                self.stopping.wait(self._broker_outage.failed(exc, time.monotonic()))

    def tick(self) -> None:
        """Run due held (ETA) messages, then wait up to ``drain_timeout`` for new ones."""
        assert self.subscription is not None
        self._guarded_refresh()
        self._run_due()
        timeout = self.holding.wait_timeout(self.config.drain_timeout, time.time())
        try:
            self.subscription.drain(timeout)
        except self.broker.connection_errors as exc:
            if self.stopping.is_set():
                return
            self._broker_outage.failed(exc, time.monotonic())  # reconnects at once
            self.holding.clear()  # held messages come back by themselves (lease or redelivery)
            self.subscription.close()
            self.subscription = self._subscribe()
        else:
            self._broker_outage.succeeded(time.monotonic())

    def stop(self) -> None:
        """Finish the running task, then stop (warm shutdown)."""
        self.stopping.set()

    def _close(self) -> None:
        subscription, self.subscription = self.subscription, None
        if subscription is None:
            return
        try:
            for delivery in self.holding.deliveries():
                delivery.requeue()
            self.holding.clear()
            subscription.release_unstarted()
        except Exception:
            logger.warning(
                "Giving back unstarted messages failed; their leases will expire", exc_info=True
            )
        subscription.close()

    # -- one message ----------------------------------------------------------------------------
    def on_delivery(self, delivery: Delivery) -> None:
        """Handle one delivered message (called from ``drain``); give it back if that fails."""
        self._guarded(delivery, self._receive, delivery)

    def _guarded(self, delivery: Delivery, step: Callable[..., None], *args: Any) -> None:
        """Run ``step(*args)`` for ``delivery``; on any exception, :meth:`_give_back` it."""
        try:
            step(*args)
        except Exception as exc:
            self._give_back(delivery, exc)
        else:
            self._handling_outage.succeeded(time.monotonic())

    def _give_back(self, delivery: Delivery, exc: Exception) -> None:
        """Put ``delivery`` back on its queue after handling it raised ``exc``, then back off.

        A result table dropped or renamed under a running worker, a lost database connection,
        a constraint the row breaks: whatever it raised, the message was not acked, so its
        outcome is not recorded and it must not be lost. Its delivery counts towards
        ``MAX_DELIVERIES`` only if its task started: a database gone for a while must not make
        a message look like one that kills its worker (and dead-letter it when the database
        is back). The consumer lives on, backing off (0.5 s, doubling, up to 10 s) instead of
        spinning through its queue: one error line per distinct failure, while it lasts.
        """
        started = delivery.tag is not None and self.slot.running() == delivery.tag
        self._connections_checked_at = -TRUSTED_FOR  # the next task checks every alias again
        self.slot.started(None)  # not running any more (and no task finished: none counted)
        delay = self._handling_outage.failed(exc, time.monotonic())
        what = f"message {wire_format.read_id(delivery.headers) or '(no id)'}"
        if delivery.is_settled:
            # acks_late=False: acked before it ran, as asked; nothing is left to give back
            logger.error("Recording the outcome of %s failed; it was acked before it ran", what)
        else:
            close_old_connections()  # a broken connection must not fail the next message too
            try:
                delivery.give_back(counted=started)
            except Exception:
                # Still unacked: the broker redelivers it when the connection closes, a leased
                # transport when its lease ends (tick() reconnects on a connection error).
                logger.error("Giving back %s failed too", what, exc_info=True)
                raise
            log = logger.warning if self._handling_outage.failures == 1 else logger.debug
            log("Gave %s back to queue %r after %s", what, delivery.queue, describe(exc))
        self.stopping.wait(delay)

    def _receive(self, delivery: Delivery) -> None:
        if self.stopping.is_set():
            delivery.requeue()
            return
        if delivery.redelivered and not delivery.is_counted:
            delivery.delivery_count = count_deliveries(delivery)
        if delivery.delivery_count > self.max_deliveries:
            self._dead(
                delivery,
                f"delivered {delivery.delivery_count} times without finishing "
                f"(MAX_DELIVERIES is {self.max_deliveries}): it may be killing its worker",
            )
            return
        message = self._decode(delivery)
        if message is None:
            return
        if self._is_celery(delivery) and parking.should_park(message) and self._park(message):
            delivery.ack()  # parked first: a crash in between parks it twice, runs it once
            return
        if message.eta is not None:
            wait = (message.eta - timezone.now()).total_seconds()
            if wait > 0:
                self.holding.hold(time.time() + wait, delivery, message)
                self._widen()
                return
        self._admit(delivery, message)

    def _is_celery(self, delivery: Delivery) -> bool:
        return self.config.accept_celery and celery_message.is_celery(delivery.headers)

    def _park(self, message: TaskMessage) -> bool:
        """Park a Celery message due beyond ``ETA_HORIZON_SECONDS``, as ``enqueue`` parks ours.

        Held unacked instead, it would be re-sent by RabbitMQ's ``consumer_timeout``. Return
        False (then it is held) when the table cannot be written.
        """
        close_old_connections()
        try:
            parking.park(message, enqueue.encode(message), using=enqueue.default_alias(self.broker))
        except Exception:
            logger.warning(
                "Could not park %s[%s]; holding it", message.task, message.id, exc_info=True
            )
            return False
        logger.info("Parked Celery message %s[%s] until %s", message.task, message.id, message.eta)
        return True

    def _admit(self, delivery: Delivery, message: TaskMessage) -> None:
        """Run ``message`` now, or hold it until its rate limit lets it start."""
        task = registry.get(message.task)
        rate = self.overrides.rate(task.name, task.rate)
        if rate is None or message.id in self.revocations:  # handle() skips a revoked one
            self.handle(delivery, message)
            return
        try:
            wait = self.limiter.reserve(task, timezone.now(), rate=rate)
        except Exception as exc:
            self._rate_limit_outage.failed(exc, time.monotonic())
            close_old_connections()
            wait, hold = 1.0, self.holding.hold  # back through _admit when it is due
        else:
            self._rate_limit_outage.succeeded(time.monotonic())
            hold = self.holding.throttle
        if wait <= 0:
            self.handle(delivery, message)
            return
        hold(time.time() + wait, delivery, message)
        self._widen()

    def _revoked(self, delivery: Delivery, message: TaskMessage) -> None:
        """Skip a revoked task's message: record REVOKED, ack it.

        A redelivered message of a task revoked with ``terminate=True`` that is still
        ``STARTED`` was running in a child the terminate killed (AMQP gives such a message back):
        it is recorded as terminated.
        """
        close_old_connections()
        outcome = Outcome(state=states.REVOKED, result={"reason": "revoked"})
        signal_name = self.revocations.terminate.get(message.id)
        if signal_name is not None and delivery.redelivered:
            data = get_backend().get(message.id)
            if data is not None and data.state == states.STARTED:
                outcome = revoked_outcome(message.id, terminated=signal_name)
        send_revoked(registry.get(message.task), message.id, outcome)  # before task_finished
        record(
            message, outcome, worker=self.config.hostname, delivery_count=delivery.delivery_count
        )
        delivery.ack()
        logger.info("Skipped revoked task %s[%s]", message.log_name, message.id)

    def _limited(self, message: TaskMessage) -> TaskMessage:
        """Return ``message`` with the time limits it runs under: an override, its own, ours."""
        hard, soft = self.overrides.time_limits.get(
            message.task, (message.time_limit, message.soft_time_limit)
        )
        if hard is None and soft is None:
            hard, soft = self.config.time_limit, self.config.soft_time_limit
        if (hard, soft) == (message.time_limit, message.soft_time_limit):
            return message
        return replace(message, time_limit=hard, soft_time_limit=soft)

    def _guarded_refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and not self._revocations_outage.is_due(now):
            return
        try:
            self.revocations.refresh(now, force=force)
            self.overrides.refresh(now)
        except Exception as exc:
            self._revocations_outage.failed(exc, now)
            close_old_connections()
        else:
            self._revocations_outage.succeeded(now)

    def _writes_started(self, task: Task[Any, Any], message: TaskMessage) -> bool:
        """Return whether a run of ``message`` records STARTED (``TRACK_STARTED``)."""
        return records_starts(
            task, ignore_result=message.ignore_result, track_started=self.track_started
        )

    @staticmethod
    def _for_every_worker(delivery: Delivery) -> bool:
        """Return whether ``delivery`` is a Broadcast queue's copy (every worker runs its own)."""
        return tq_settings.QUEUES.broadcast_of(delivery.queue) is not None

    def _start(self, task: Task[Any, Any], message: TaskMessage, delivery: Delivery) -> bool:
        """Record STARTED; return False if the task already ran (this is a second copy).

        Copies happen: a crash between recording a result and acking, a parking release or a
        beat interrupted between publish and commit. Recording STARTED refuses a finished task,
        so the check costs no extra query. Without STARTED tracking, only messages known to
        risk a copy (released from parking) are checked. A Broadcast queue's copy is meant for
        every worker, so it runs whatever another worker did with the same id.
        """
        for_every_worker = self._for_every_worker(delivery)
        if self._writes_started(task, message):
            started = get_backend().mark_started(
                message, worker=self.config.hostname, delivery_count=delivery.delivery_count
            )
            return started or for_every_worker
        if for_every_worker:
            return True
        if delivery.headers.get(wire_format.RELEASED_HEADER):
            data = get_backend().get(message.id)
            return data is None or data.state not in states.READY_STATES
        return True

    def _run_due(self) -> None:
        now = time.time()
        while not self.stopping.is_set() and (due := self.holding.pop_due_held(now)):
            self._widen()
            self._guarded(due[0], self._admit, *due)
        while not self.stopping.is_set() and (due := self.holding.pop_due_throttled(now)):
            self._widen()
            self._guarded(due[0], self.handle, *due)

    def _widen(self) -> None:
        """Keep held messages out of the prefetch window, so they never block due ones."""
        if self.subscription is not None:
            self.subscription.widen_prefetch(self.holding.prefetch_extra(self.config.prefetch))

    def _decode(self, delivery: Delivery) -> TaskMessage | None:
        """Verify (``SIGNING``) and decode ``delivery``; dead-letter it and return None if bad."""
        size = _body_size(delivery.body, self.max_payload_bytes)
        # A compressed message counts as sent (checked by its producer): kombu has already
        # decompressed it, and the limit is on what travels.
        compressed = bool(delivery.headers.get("compression"))
        if size > self.max_payload_bytes and not compressed:  # a producer with another limit
            limit = self.max_payload_bytes
            self._dead(delivery, f"oversize: {size} bytes, over TQ['MAX_PAYLOAD_BYTES'] ({limit})")
            return None
        try:
            if self.signing:  # before anything reads the body
                signing.verify(delivery.headers, delivery.body, delivery.content_type)
            celery = self._is_celery(delivery)
            if celery:
                message = celery_message.decode(
                    delivery.headers, delivery.body, delivery.content_type, queue=delivery.queue
                )
            else:
                message = wire_format.decode(
                    delivery.headers,
                    delivery.body,
                    delivery.content_type,
                    queue=delivery.queue,
                    accept=self.accept,
                    # A foreign producer's priority (not Celery's: on Redis its order is the
                    # reverse), when the headers carry none
                    priority=delivery.priority,
                )
            self._check_arguments(message)
        except BadSignature as exc:
            self._dead(delivery, f"bad signature: {exc}")
            return None
        except DecodeError as exc:
            self._dead(delivery, f"undecodable message: {exc}")
            return None
        except NotRegistered as exc:
            self._dead(delivery, f"unknown task: {exc}")
            return None
        except TypeError as exc:
            self._dead(delivery, f"arguments do not match the task's signature: {exc}")
            return None
        return message

    def _check_arguments(self, message: TaskMessage) -> None:
        """Raise ``TypeError`` if ``message``'s task cannot take its arguments.

        Whether ``Signature.bind`` accepts a call depends only on how many positional
        arguments it has and which keyword names: the shapes a task accepted are remembered
        (:data:`FITTING_SHAPES` at most), so a run of like messages binds once.
        """
        task = registry.get(message.task)
        shape = (task, len(message.args), frozenset(message.kwargs))
        if shape in self._fitting:
            return
        task.check_arguments(message.args, message.kwargs)
        if len(self._fitting) >= FITTING_SHAPES:
            self._fitting.clear()
        self._fitting.add(shape)

    def _dead(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter ``delivery``, then ack it; a dead letter that cannot be written raises
        (the message goes back to its queue: a log line is no durable record)."""
        close_old_connections()
        dead_letter(delivery, reason, worker=self.config.hostname)
        delivery.ack()

    def handle(self, delivery: Delivery, message: TaskMessage) -> None:
        """Execute ``message``, record the outcome, then settle ``delivery``."""
        task = registry.get(message.task)
        acks_late = task.resolved_acks_late()
        self._close_old_connections()
        count = delivery.delivery_count
        if delivery.redelivered and message.id not in self.revocations:
            self._guarded_refresh(force=True)  # it may have been terminated in a child just now
        if message.id in self.revocations:
            self._revoked(delivery, message)
            return
        lost_is_failure = acks_late and not task.resolved_reject_on_worker_lost()
        if (
            count > 1
            and lost_is_failure
            and fail_if_lost(delivery, message, worker=self.config.hostname)
        ):
            return
        if not self._start(task, message, delivery):
            logger.info(
                "Skipped %s[%s]: it already ran (a second copy)", message.log_name, message.id
            )
            unique.release(message)  # e.g. after a hard time limit killed the first copy
            delivery.ack()
            return
        if not acks_late:
            delivery.ack(now=True)  # sent before it runs: a crash must not run it again
        signals.send(signals.task_received, sender=task, message=message)
        message = self._limited(message)
        deadline = None
        if message.time_limit and self.slot.is_shared:  # the prefork parent enforces it
            deadline = time.time() + message.time_limit
        elif message.time_limit or message.soft_time_limit:
            warn_unenforced(message, self._warned)
        self.slot.started(delivery.tag, message.id, task_name=message.task, deadline=deadline)
        started_at = time.time()
        with soft_time_limit(message.soft_time_limit):
            outcome = execute(message, hostname=self.config.hostname, delivery_count=count)
        durable = not (acks_late and self.results_durable_with_ack and not lost_is_failure)
        # Fenced: if this worker was cut off past its lease and another delivery started the
        # task meanwhile, this late outcome is refused (and the fenced ack below deletes nothing).
        fenced = self._writes_started(task, message) and not self._for_every_worker(delivery)
        record(
            message,
            outcome,
            worker=self.config.hostname,
            delivery_count=count,
            durable=durable,
            fenced=fenced,
            # django:// on the results' PostgreSQL: the final state's statement acks too
            ack=delivery.folded_ack() if acks_late else None,
        )
        if self.config.observer is not None:
            self._observe(message, outcome, started_at)
        close_old_connections()
        self._connections_checked_at = time.monotonic()
        if acks_late and not delivery.acked:
            if outcome.state == REJECTED and outcome.requeue:
                delivery.requeue()
            else:
                delivery.ack()
        self._queue_db_used_at = time.monotonic()
        self.processed += 1
        self.slot.finished()
        if outcome.state == states.FAILURE:
            logger.warning(
                "Task %s[%s] failed: %r", message.log_name, message.id, outcome.exception
            )
        elif outcome.terminated:
            logger.warning(
                "Task %s[%s] terminated (%s): REVOKED",
                message.log_name,
                message.id,
                outcome.terminated,
            )
        self._recycle_if_due()

    def _close_old_connections(self) -> None:
        """``close_old_connections()``, without the health check's ``SELECT 1`` on the queue's
        database while tasks follow each other (``django://``).

        ``CONN_HEALTH_CHECKS`` (on in workers) would run a ``SELECT 1`` before each task's first
        query: a round trip per task. A connection to the queue's alias that ran the previous
        task without an error less than :data:`TRUSTED_FOR` seconds ago is used as is; if the
        database restarted meanwhile, its next statement fails with one of the broker's
        connection errors: :meth:`tick` reconnects (this connection closed for its error) and
        the message, never acked, comes back. Other aliases are checked as before: an error
        there is not the broker's, and must not reach the consumer's loop.

        The walk over every alias is skipped when the previous task's, after its outcome, ran
        less than :data:`TRUSTED_FOR` seconds ago and nothing failed since (a failure resets
        it in :meth:`_give_back`): it armed every health check then, closed what was broken or
        past its age, and the next statement on an alias checks it. An alias used between
        the two tasks (a claim, the revocations) is then used without another ``SELECT 1``.
        """
        now = time.monotonic()
        if now - self._connections_checked_at > TRUSTED_FOR:
            close_old_connections()
        alias = self.broker.database_alias
        if alias is None or now - self._queue_db_used_at > TRUSTED_FOR:
            return
        db = connections[alias]
        if db.connection is not None and not db.errors_occurred and not db.in_atomic_block:
            db.health_check_done = True  # type: ignore[attr-defined]  # Django sets it per check

    def _observe(self, message: TaskMessage, outcome: Outcome, started_at: float) -> None:
        assert self.config.observer is not None
        try:
            self.config.observer.observe(message, outcome, started_at)
        except Exception:
            logger.exception("Observing %s[%s] failed", message.log_name, message.id)

    def _recycle_if_due(self) -> None:
        """Stop after ``max_tasks`` tasks, or (prefork) when the child is over ``max_memory_kib``.

        The pool starts a fresh consumer in place of one that stopped.
        """
        if self.config.max_tasks and self.processed >= self.config.max_tasks:
            self.stop()
            return
        limit = self.config.max_memory_kib
        if limit and self.slot.is_shared:  # only a prefork child gives its memory back by exiting
            used = memory.resident_kib()
            if used > limit:
                logger.warning(
                    "Child pid %d holds %d KiB, over --max-memory-per-child (%d KiB): replacing it",
                    os.getpid(),
                    used,
                    limit,
                )
                self.stop()
