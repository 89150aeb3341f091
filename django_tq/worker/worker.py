"""The worker process: start a pool of consumers, supervise it, keep house, shut down cleanly.

``Worker.run()`` loops around ``tick(now)``: reap and respawn dead children (releasing their
leases at once), release due parked messages, relay the outbox, write the heartbeat row, sample
queue depths for the dashboard, delete expired results. Each step reaching the database or the
broker runs through an :class:`~django_tq.outage.Outage`: while it fails it backs off and logs
one line per outage, and the worker goes on. SIGTERM/SIGINT ask for a warm
shutdown (running tasks finish, unstarted prefetched messages go back), a second one — or
SIGQUIT — for a cold one (running tasks are abandoned and their messages released). SIGHUP
restarts the children; SIGUSR1 dumps every thread's traceback to stderr.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from django.db import close_old_connections, connections, router
from django.utils import timezone

from django_tq import events, outbox, parking, queues, serialization, signals, sqlite, states
from django_tq import message as wire_format
from django_tq.broker import Broker
from django_tq.cleanup import expire
from django_tq.conf import tq_settings
from django_tq.exceptions import NotRegistered, TimeLimitExceeded
from django_tq.execution import record, revoked_outcome, send_revoked
from django_tq.liveness import LivenessFile
from django_tq.models import QueueDepthSample, WorkerState
from django_tq.outage import TRANSIENT, Outage
from django_tq.registry import registry
from django_tq.result_backends import get_backend
from django_tq.worker.autoreload import CodeWatcher
from django_tq.worker.autoscale import Autoscaler
from django_tq.worker.consumer import Consumer, ConsumerConfig, TaskObserver
from django_tq.worker.delivery_limit import DeliveryLimitRescue
from django_tq.worker.pool import ChildExit, Pool, Slot, Target, make_pool
from django_tq.worker.remote_control import ControlServer
from django_tq.worker.revocations import Revocations
from django_tq.worker.tracebacks import log_tracebacks

logger = logging.getLogger("django_tq.worker")


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerConfig:
    """How a worker runs."""

    queues: tuple[str, ...]
    concurrency: int
    pool: str = "prefork"
    hostname: str = ""
    prefetch_multiplier: int = 4
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None  #: KiB resident after a task (prefork)
    purge: bool = False
    heartbeat_interval: float = 5.0
    cleanup_interval: float = 60.0
    sample_interval: float = 60.0
    shutdown_timeout: float | None = None
    autoreload: bool = False  #: stop warm when the code changes (``reload_requested``)
    autoscale: tuple[int, int] | None = None  #: ``(maximum, minimum)`` consumers
    autoscale_keepalive: float = 30.0  #: seconds a consumer may idle before it is let go
    #: ``--time-limit`` / ``--soft-time-limit``: for tasks whose messages carry none
    time_limit: float | None = None
    soft_time_limit: float | None = None
    metrics_port: int | None = None  #: serve Prometheus metrics on this port (``--metrics-port``)
    metrics_address: str = "0.0.0.0"
    #: also run Celery protocol 2 messages from these queues (``--accept-celery``)
    accept_celery: bool = False
    events: bool = False  #: send live task events (``-E``, :mod:`django_tq.events`)
    #: touched at every turn of the parent's loop, for a liveness probe (``--liveness-file``)
    liveness_file: str | None = None


def default_hostname() -> str:
    """Return ``tq-<pid>@<host>``, the default worker name (unique per process on a host)."""
    return f"tq-{os.getpid()}@{socket.gethostname()}"


def run_consumer(
    broker: Broker, config: ConsumerConfig, index: int, stopping: Any, slot: Slot
) -> None:
    """Run one consumer until ``stopping`` is set (the target every pool runs)."""
    signals.send(signals.worker_process_init, sender=None, index=index)
    try:
        Consumer(broker, config, stopping=stopping, slot=slot).run()
    finally:
        # BROKER_CONFIRM="batch": what the child published (retries, chain steps) is confirmed,
        # or in the outbox, before it exits (a pool child may leave by os._exit: no atexit)
        broker.wait_for_confirms()
        signals.send(signals.worker_process_shutdown, sender=None, index=index)
        connections.close_all()


class Worker:
    """A pool of consumers on ``queues`` plus the parent's housekeeping."""

    def __init__(self, broker: Broker, config: WorkerConfig) -> None:
        self.broker = broker
        self.config = config
        self.hostname = config.hostname or default_hostname()
        #: counts what the consumers ran, with a metrics port (set in :meth:`run`)
        self.observer: TaskObserver | None = None
        concurrency = config.autoscale[1] if config.autoscale else config.concurrency
        self.pool: Pool = make_pool(config.pool, self._target(), concurrency)
        self.autoscaler = (
            Autoscaler(
                self.pool,
                maximum=config.autoscale[0],
                minimum=config.autoscale[1],
                backlog=self.backlog,
                keepalive=config.autoscale_keepalive,
            )
            if config.autoscale
            else None
        )
        self.stop_requested = threading.Event()
        self.cold = False
        self.started_at = timezone.now()
        self._next_heartbeat = 0.0
        self._next_cleanup = 0.0
        self._next_sample = 0.0
        self._restart_children = False
        self.revocations = Revocations()
        self._outages: dict[str, Outage] = {}
        self.control: ControlServer | None = None  # made at the first tick (it reads the DB)
        self.events: events.EventSender | None = None  # with ``config.events``, once running
        self.watcher = CodeWatcher() if config.autoreload else None
        self.liveness = LivenessFile(config.liveness_file) if config.liveness_file else None
        #: reads back what RabbitMQ dead-lettered at a quorum queue's delivery limit
        self.delivery_limit = self._delivery_limit_rescue(config.queues)
        #: the code changed (``autoreload``): whoever started the worker starts it again
        self.reload_requested = False

    # -- life cycle -----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until a shutdown signal; return the process exit code."""
        configure_connections()
        if self.config.purge:
            purged = self.broker.purge(list(self.config.queues))
            logger.info("Purged %d message(s) from %s", purged, ", ".join(self.config.queues))
        self._install_signals()
        if self.config.events:  # before the pool forks: the children inherit the receivers
            self.events = events.enable(self.broker, self.hostname)
        # The first tick runs before the fork: the children inherit what it loads (the broker's
        # client library, the database backend, the models' caches) instead of each loading its
        # own copy. Its two steps that only cost round trips — sampling the queue depths and
        # deleting expired results — wait for the first tick after the pool started, so the
        # first task does not wait for them.
        self._next_sample = self._next_cleanup = math.inf
        self.tick(time.monotonic())
        self._next_sample = self._next_cleanup = 0.0
        connections.close_all()
        exporter = None
        if self.config.metrics_port is not None:
            # import-inside: optional extra: prometheus_client, imported only with a metrics port
            from django_tq.worker import metrics

            exporter, self.observer = metrics.prepare(
                self.hostname,
                self.pool,
                port=self.config.metrics_port,
                address=self.config.metrics_address,
            )
            self.pool.target = self._target()  # the consumers count what they run
        self.pool.start()
        if exporter is not None:
            exporter.start()
        logger.info(
            "Worker %s ready: pool=%s concurrency=%d queues=%s broker=%s",
            self.hostname,
            self.pool.name,
            self.pool.concurrency,
            ",".join(self.config.queues),
            self.broker.safe_url,
        )
        signals.send(signals.worker_ready, sender=self)
        self.worker_event("worker-online")
        try:
            if self.pool.runs_in_main_thread:
                housekeeping = threading.Thread(
                    target=self._housekeeping, name="django_tq-housekeeping", daemon=True
                )
                housekeeping.start()
                self.pool.run_in_main_thread()
            else:
                while not self.stop_requested.is_set():
                    self.tick(time.monotonic())
                    self.stop_requested.wait(0.5)
        finally:
            self._shutdown()
            if exporter is not None:
                exporter.stop()
        return 0

    def _housekeeping(self) -> None:
        outage = Outage("Worker housekeeping", logger)
        while not self.stop_requested.wait(0.5):
            outage.attempt(lambda: self.tick(time.monotonic()), time.monotonic())

    def tick(self, now: float) -> None:
        """Reap dead children, write the heartbeat, sample queues, delete old results (when due)."""
        if self.liveness is not None:
            self.liveness.touch(now)
        if self._restart_children:
            self._restart_children = False
            self.pool.restart()
        if self.watcher is not None and not self.reload_requested:
            changed = self.watcher.tick(now)
            if changed is not None:
                self._reload(changed)
        self._release_ended(self.pool.tick())
        self._guard("release_parked", self.release_parked, now)
        self._guard("relay_outbox", self.relay_outbox, now)
        self._guard("terminate_revoked", lambda: self.terminate_revoked(now), now)
        self._guard("enforce_time_limits", self.enforce_time_limits, now)
        self._guard("remote_control", lambda: self.answer_commands(now), now)
        if self.delivery_limit is not None:
            rescue = self.delivery_limit
            self._guard("delivery_limit", lambda: rescue.tick(now), now)
        if self.autoscaler is not None:
            autoscaler = self.autoscaler
            self._guard("autoscale", lambda: autoscaler.tick(now), now)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.heartbeat_interval
            self._guard("heartbeat", self.heartbeat, now)
            self.worker_event("worker-heartbeat")
        if now >= self._next_sample:
            self._next_sample = now + self.config.sample_interval
            self._guard("sample_queues", self.sample_queues, now)
        if now >= self._next_cleanup:
            self._next_cleanup = now + self.config.cleanup_interval
            self._guard("cleanup", self.cleanup, now)
        close_old_connections()

    def _guard(self, name: str, step: Callable[[], object], now: float) -> None:
        """Run one housekeeping step unless it is backing off after a failure.

        A failure is logged by the step's :class:`Outage` (one line per outage; a traceback
        once per distinct bug) and the connections are closed, so the next attempt opens fresh
        ones.
        """
        outage = self._outages.get(name)
        if outage is None:
            outage = self._outages[name] = Outage(
                f"Worker housekeeping step {name}",
                logger,
                transient=(*TRANSIENT, *self.broker.connection_errors),  # e.g. control's channel
            )
        if not outage.is_due(now):
            return
        try:
            step()
        except Exception as exc:
            outage.failed(exc, now)
            connections.close_all()
        else:
            outage.succeeded(now)

    def _release(self, pid: int, running: Any = None, *, acked: Any = None) -> None:
        try:
            running_tags = [] if running is None else [running]
            acked_tags = [] if acked is None else [acked]
            released = self.broker.release_leases_of(pid, running=running_tags, acked=acked_tags)
        except Exception:
            logger.warning(
                "Could not release the leases of pid %d; they will expire", pid, exc_info=True
            )
            return
        if released:
            logger.warning("Released %d message(s) held by ended child pid %d", released, pid)

    def terminate_revoked(self, now: float) -> None:
        """Stop running tasks revoked with ``terminate=True``: each is asked once, on any pool."""
        self.revocations.refresh(now)
        if not self.revocations.terminate:
            return
        for task_id in self.pool.running_tasks():
            signal_name = self.revocations.terminate.get(task_id)
            if signal_name is not None and self.pool.terminate(task_id, signal_name):
                logger.warning("Terminating revoked task %s with %s", task_id, signal_name)

    def _settle_terminated(self, exit: ChildExit) -> bool:
        """Record the task a terminate killed with its child as REVOKED; return whether it was.

        The message is read back from the dead child's lease, so the result is recorded as a
        consumer would (chords and chains follow), then acked by the caller. AMQP keeps no
        lease: the broker gives the message back, and the consumer that gets it skips it as a
        terminated task.
        """
        assert exit.pid is not None and exit.terminated is not None
        task_id, signal_name = exit.terminated
        delivery = self.broker.leased_delivery(exit.pid, exit.running)
        if delivery is None:
            logger.warning(
                "Terminated task %s with %s; its message comes back and is skipped as revoked",
                task_id,
                signal_name,
            )
            return False
        message = wire_format.decode(
            delivery.headers,
            delivery.body,
            delivery.content_type,
            queue=delivery.queue,
            accept=list(tq_settings.ACCEPT_CONTENT),
        )
        outcome = revoked_outcome(task_id, terminated=signal_name)
        try:
            task = registry.get(message.task)
        except NotRegistered:
            task = None
        send_revoked(task, task_id, outcome)  # before record() sends task_finished
        record(message, outcome, worker=self.hostname, delivery_count=delivery.delivery_count)
        logger.warning("Task %s[%s] terminated (%s): REVOKED", message.task, task_id, signal_name)
        return True

    def enforce_time_limits(self) -> None:
        """Kill children whose task ran past its hard time limit; record the failure.

        The killed child's message comes back, and the worker that gets it skips it: the task
        is finished (FAILURE with ``TimeLimitExceeded``).
        """
        for task_id, task_name in self.pool.kill_overdue(time.time()):
            error = TimeLimitExceeded(f"{task_name}[{task_id}] ran past its hard time limit")
            get_backend().set_state(
                task_id, states.FAILURE, result=serialization.exception_to_data(error)
            )
            logger.error("Killed the child running %s[%s]: hard time limit", task_name, task_id)

    def release_parked(self) -> int:
        """Publish parked (far-ETA) messages that are now due."""
        released = parking.release_due(self.broker)
        if released:
            logger.info("Released %d parked message(s) now due", released)
        return released

    def relay_outbox(self) -> int:
        """Publish outbox rows that were not published after their commit (``OUTBOX``)."""
        if not (tq_settings.OUTBOX or tq_settings.BROKER_CONFIRM == "batch"):
            return 0  # "batch": a late nack or timeout writes the message to the outbox
        relayed = outbox.relay(self.broker)
        if relayed:
            logger.warning("Relayed %d outbox message(s) not published after commit", relayed)
        return relayed

    def heartbeat(self, stopped: bool = False) -> None:
        """Write this worker's ``WorkerState`` row."""
        now = timezone.now()
        alias = router.db_for_write(WorkerState) or "default"
        with sqlite.write_atomic(alias):  # update_or_create reads, then writes
            WorkerState.objects.using(alias).update_or_create(
                hostname=self.hostname,
                defaults={
                    "pid": os.getpid(),
                    "queues": list(self.config.queues),
                    "pool": self.pool.name,
                    "concurrency": self.pool.concurrency,
                    "processed": self.pool.processed(),
                    "started_at": self.started_at,
                    "last_heartbeat": now,
                    "stopped_at": now if stopped else None,
                },
            )

    def sample_queues(self) -> int:
        """Record the depth of every queue in use for the dashboard; return how many queues."""
        now = timezone.now()
        depths = [
            (info.name, info.depth)
            for info in queues.overview(now, self.broker)
            if info.depth is not None
        ]
        return QueueDepthSample.objects.record(depths, now)

    def _target(self) -> Target:
        """Return what each consumer runs: a :class:`Consumer` on ``self.config.queues``."""
        consumer_config = ConsumerConfig(
            queues=self.config.queues,
            prefetch=max(1, self.config.prefetch_multiplier),
            hostname=self.hostname,
            max_tasks=self.config.max_tasks_per_child,
            max_memory_kib=self.config.max_memory_per_child,
            time_limit=self.config.time_limit,
            soft_time_limit=self.config.soft_time_limit,
            accept_celery=self.config.accept_celery,
            observer=self.observer,
        )
        return functools.partial(run_consumer, self.broker, consumer_config)

    def consume(self, queues: tuple[str, ...]) -> None:
        """Consume ``queues`` from now on (``add_consumer``/``cancel_consumer``).

        The consumers are replaced warm, as on ``SIGHUP``: each finishes its running task, gives
        its prefetched messages back and starts again on the new queues.
        """
        if not queues:
            raise ValueError("a worker consumes at least one queue")
        self.config = replace(self.config, queues=queues)
        self.pool.target = self._target()
        self._restart_children = True
        if self.delivery_limit is not None:
            self.delivery_limit.close()
        self.delivery_limit = self._delivery_limit_rescue(queues)

    def _delivery_limit_rescue(self, queues: tuple[str, ...]) -> DeliveryLimitRescue | None:
        """Return what reads back the delivery-limit dead letters of the quorum ``queues``."""
        quorum = [name for name in queues if self.broker.is_quorum(name)]
        if not quorum:
            return None
        return DeliveryLimitRescue(self.broker, quorum, hostname=self.hostname)

    def answer_commands(self, now: float) -> int:
        """Run the remote-control commands sent to this worker; return how many."""
        if self.control is None:
            self.control = ControlServer(self)  # commands sent from now on are for us
        return self.control.tick(now)

    def worker_event(self, type_: str) -> None:
        """Send ``worker-online``/``-heartbeat``/``-offline`` when events are on."""
        if self.events is not None:
            self.events.worker_event(
                type_,
                active=len(self.pool.running()),
                processed=self.pool.processed(),
                freq=self.config.heartbeat_interval,
            )

    def backlog(self) -> int:
        """Return how many messages wait in (or are leased from) this worker's queues."""
        return sum(self.broker.depth(name) for name in self.config.queues)

    def cleanup(self, batches: int = 10) -> int:
        """Delete what ``RESULT_EXPIRES`` says has expired (see :mod:`django_tq.cleanup`)."""
        return expire(batches=batches).results

    # -- signals and shutdown -------------------------------------------------------------------
    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGQUIT, self._on_cold_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        if self.stop_requested.is_set():
            self._on_cold_signal(signum, frame)
            return
        logger.info(
            "Warm shutdown: finishing running tasks (send the signal again to stop at once)"
        )
        self.request_stop()

    def _on_cold_signal(self, signum: int, frame: Any) -> None:
        logger.warning(
            "Cold shutdown: abandoning running tasks; their messages go back to the queue"
        )
        self.cold = True
        self.stop_requested.set()
        self.pool.stop()
        if self.pool.runs_in_main_thread:
            raise SystemExit(1)

    def _on_usr1(self, signum: int, frame: Any) -> None:
        log_tracebacks(frame)

    def request_stop(self) -> None:
        """Shut down warm: running tasks finish, prefetched messages go back (as ``SIGTERM``)."""
        self.stop_requested.set()
        self.pool.stop()

    def _reload(self, changed: Path) -> None:
        logger.info("%s changed: stopping to start again with the new code", changed)
        self.reload_requested = True
        self.request_stop()

    def _on_hup(self, signum: int, frame: Any) -> None:
        logger.info("SIGHUP: restarting children")
        self._restart_children = True

    def _shutdown(self) -> None:
        self.stop_requested.set()
        self.pool.stop()
        while not self.cold and not self.pool.join(0.5):
            # warm: running tasks finish (a second signal sets self.cold); still alive meanwhile
            if self.liveness is not None:
                self.liveness.touch(time.monotonic())
        if self.cold:
            self._release_ended(self.pool.kill())
            self._release(os.getpid())  # threads and solo consumers of this very process
        self._release_ended(self.pool.tick())
        self._guard("final heartbeat", lambda: self.heartbeat(stopped=True), time.monotonic())
        signals.send(signals.worker_shutdown, sender=self)
        self.worker_event("worker-offline")
        if self.events is not None:
            self.events.disconnect()
        if self.control is not None:
            self.control.close()
        if self.delivery_limit is not None:
            self.delivery_limit.close()
        connections.close_all()
        if self.liveness is not None:
            self.liveness.remove()
        logger.info("Worker %s stopped", self.hostname)

    def _release_ended(self, exits: list[ChildExit]) -> None:
        for exit in exits:
            if exit.pid is None:
                continue
            if exit.terminated is not None and exit.running is not None:
                try:
                    settled = self._settle_terminated(exit)
                except Exception:
                    logger.warning(
                        "Recording terminated task %s failed; its message goes back and is "
                        "skipped as revoked",
                        exit.terminated[0],
                        exc_info=True,
                    )
                    connections.close_all()
                    settled = False
                if settled:
                    self._release(exit.pid, acked=exit.running)
                    continue
            self._release(exit.pid, exit.running)


def configure_connections() -> None:
    """Keep healthy DB connections across tasks for ``WORKER_DB_CONN_MAX_AGE`` seconds.

    On SQLite, give them a busy timeout and the file WAL (:func:`django_tq.sqlite.prepare_process`).
    """
    max_age = tq_settings.WORKER_DB_CONN_MAX_AGE
    for alias in connections:
        settings_dict = connections[alias].settings_dict
        settings_dict["CONN_MAX_AGE"] = max_age
        settings_dict["CONN_HEALTH_CHECKS"] = True
    sqlite.prepare_process()
