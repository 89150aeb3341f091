"""The scheduler: ``run()`` loops around ``tick(now)``, which sends every due occurrence once.

Each tick reads the periodic tasks from the database (so admin edits apply at the next tick, no
restart), works out the due occurrences of each (:mod:`django_tq.beat.due`) and, for each one,
*claims* it by inserting its ``PeriodicTaskRun``. The row is unique on (periodic task, scheduled
time): when several beats run, one insert wins and only the winner sends. The task id is derived
from the occurrence, so every beat would send the same message.

With the ``django://`` transport on the same database, claim and message commit together. With
another broker the claim commits first, the message is published, then the run is marked sent; a
run claimed but never marked sent (its beat died, or the broker was down) is sent again by any
beat after ``republish_after``.

Beat never exits on a database or broker outage (a busy SQLite file, a restarting server): the
start-up sync and every tick retry with back-off, logging one line per outage; a bug (any other
exception) logs its traceback once per distinct failure (see :mod:`django_tq.outage`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, close_old_connections, connections, router, transaction
from django.db.models import F, Q
from django.utils import timezone

from django_tq import signals, sqlite
from django_tq.beat.due import due
from django_tq.beat.sync import sync_declared
from django_tq.broker import get_broker
from django_tq.conf import tq_settings
from django_tq.exceptions import PublishError, QueueNotFound
from django_tq.liveness import LivenessFile
from django_tq.models import PeriodicTask, PeriodicTaskRun
from django_tq.models.periodic_tasks import occurrence_task_id
from django_tq.outage import Outage
from django_tq.result_backends import get_backend
from django_tq.tasks import send_task

logger = logging.getLogger("django_tq.beat")

#: how long run rows are kept (each task's latest run is always kept)
RUN_RETENTION = dt.timedelta(days=7)
CLEANUP_EVERY = dt.timedelta(minutes=10)
#: stale unsent runs re-sent per tick at most
REPUBLISH_BATCH = 100


@dataclass(frozen=True, kw_only=True, slots=True)
class Sent:
    """One occurrence this beat sent."""

    periodic_task: str
    task: str
    task_id: str
    scheduled_for: dt.datetime


def default_name() -> str:
    """Return ``beat@<host>:<pid>``, the default name a beat claims runs under."""
    return f"beat@{socket.gethostname()}:{os.getpid()}"


class Scheduler:
    """Send periodic tasks on their schedules; safe to run in many processes at once."""

    def __init__(
        self,
        *,
        name: str = "",
        max_interval: float | None = None,
        grace: dt.timedelta | None = None,
        republish_after: dt.timedelta | None = None,
        liveness_file: str | None = None,
    ) -> None:
        self.name = name or default_name()
        self.max_interval = float(max_interval or tq_settings.BEAT_MAX_LOOP_INTERVAL)
        #: an occurrence found later than this after its time was missed (misfire policy)
        self.grace = grace or dt.timedelta(seconds=max(10.0, 2 * self.max_interval))
        #: a claimed run not marked sent after this long is sent again
        self.republish_after = republish_after or dt.timedelta(
            seconds=max(10.0, 2 * float(tq_settings.BROKER_CONNECTION_TIMEOUT))
        )
        self.alias = router.db_for_write(PeriodicTaskRun) or "default"
        self.stop_requested = threading.Event()
        #: touched at every turn of the loop, for a liveness probe (``--liveness-file``)
        self.liveness = LivenessFile(liveness_file) if liveness_file else None
        #: when the next occurrence is due (computed by each tick)
        self.next_due: dt.datetime | None = None
        self._next_cleanup: dt.datetime | None = None
        self._ticks = Outage(f"Beat {self.name}: a tick", logger)
        #: each periodic task's own failures (a bad schedule, an unknown task), by name
        self._task_outages: dict[str, Outage] = {}

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        """Sync the declared schedules, then tick until :meth:`stop`; return the exit code."""
        sqlite.prepare_process()
        if self.start():
            while not self.stop_requested.is_set():
                if self.liveness is not None:
                    self.liveness.touch(time.monotonic())
                self.stop_requested.wait(self.run_tick())
        if self.liveness is not None:
            self.liveness.remove()
        connections.close_all()
        logger.info("Beat %s stopped", self.name)
        return 0

    def start(self) -> bool:
        """Sync the declared schedules, retrying while the database is out; False if stopped first.

        A bad declaration raises ``ImproperlyConfigured`` at once, as does any other bug.
        """
        outage = Outage(f"Beat {self.name}: syncing the periodic tasks declared in code", logger)
        while not self.stop_requested.is_set():
            if self.liveness is not None:
                self.liveness.touch(time.monotonic())
            close_old_connections()
            try:
                report = sync_declared()
                enabled = PeriodicTask.objects.filter(enabled=True).count()
            except Exception as exc:
                if not outage.is_transient(exc):
                    raise
                connections.close_all()
                self.stop_requested.wait(outage.failed(exc, time.monotonic()))
                continue
            outage.succeeded(time.monotonic())
            for what in ("created", "updated", "deleted"):
                names = getattr(report, what)
                if names:
                    logger.info("Periodic tasks declared in code %s: %s", what, ", ".join(names))
            logger.info(
                "Beat %s ready: %d enabled periodic task(s); checking at least every %.1fs",
                self.name,
                enabled,
                self.max_interval,
            )
            return True
        return False

    def run_tick(self) -> float:
        """Run one tick now; return the seconds to wait before the next (a back-off if it failed)."""
        close_old_connections()
        try:
            self.tick(timezone.now())
        except Exception as exc:
            connections.close_all()
            return self._ticks.failed(exc, time.monotonic())
        self._ticks.succeeded(time.monotonic())
        close_old_connections()
        return self.seconds_to_wait(timezone.now())

    def stop(self) -> None:
        """Finish the running tick, then stop."""
        self.stop_requested.set()

    def install_signal_handlers(self) -> None:
        """Stop on SIGTERM and SIGINT (call from the main thread)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_requested.is_set():
            raise SystemExit(1)
        logger.info("Beat %s stopping (signal %d)", self.name, signum)
        self.stop()

    def seconds_to_wait(self, now: dt.datetime) -> float:
        """Return how long to sleep: until the next occurrence, ``max_interval`` at most."""
        if self.next_due is None:
            return self.max_interval
        return min(self.max_interval, max(0.0, (self.next_due - now).total_seconds()))

    # -- one tick -------------------------------------------------------------------------------
    def tick(self, now: dt.datetime) -> list[Sent]:
        """Send what is due at ``now`` and re-send stale unsent runs; return what was sent.

        A periodic task that fails for a reason of its own is logged and skipped; a database or
        broker outage ends the tick (the caller retries it).
        """
        sent = self.republish(now)
        next_due = now + dt.timedelta(seconds=self.max_interval)
        tasks = PeriodicTask.objects.using(self.alias).filter(enabled=True)
        for periodic_task in tasks.select_related(*PeriodicTask.SCHEDULE_FIELDS):
            outage = self._task_outage(periodic_task.name)
            try:
                sent.extend(self.send_due(periodic_task, now))
                schedule = periodic_task.get_schedule()
                upcoming = schedule.next_after(now, since=periodic_task.since(schedule))
            except Exception as exc:
                if outage.is_transient(exc):
                    raise
                outage.failed(exc, time.monotonic())
                continue
            outage.succeeded(time.monotonic())
            if upcoming is not None and upcoming < next_due:
                next_due = upcoming
        self.next_due = next_due
        if self._next_cleanup is None or now >= self._next_cleanup:
            self._next_cleanup = now + CLEANUP_EVERY
            self.cleanup(now)
        signals.send(signals.beat_tick, sender=self, now=now, sent=sent)
        return sent

    def _task_outage(self, name: str) -> Outage:
        outage = self._task_outages.get(name)
        if outage is None:
            outage = Outage(f"Periodic task {name!r}", logger)
            self._task_outages[name] = outage
        return outage

    def send_due(self, periodic_task: PeriodicTask, now: dt.datetime) -> list[Sent]:
        """Claim and send the due occurrences of one periodic task."""
        if periodic_task.expires is not None and now >= periodic_task.expires:
            return []
        schedule = periodic_task.get_schedule()
        since = periodic_task.since(schedule)
        floor = since
        if schedule.recurring:
            # An edit starts the schedule afresh: no catch-up for what was missed before it.
            floor = max(since, periodic_task.date_changed - self.grace)
        plan = due(
            schedule,
            since=since,
            floor=floor,
            now=now,
            grace=self.grace,
            policy=periodic_task.misfire_policy,
            one_off=periodic_task.one_off,
        )
        if plan.send:
            self._check_routing(periodic_task)
        sent = []
        for scheduled_for in plan.send:
            task_id = occurrence_task_id(periodic_task.pk, scheduled_for)
            claim = self._new_claim(periodic_task, scheduled_for, task_id, now)
            delivered = self._deliver(periodic_task, scheduled_for, task_id, claim, now)
            if delivered is not None:
                sent.append(delivered)
        if plan.latest is not None and not plan.send:
            self._advance(periodic_task, plan.latest)  # skipped: do not look at them again
        return sent

    @staticmethod
    def _check_routing(periodic_task: PeriodicTask) -> None:
        """Raise ``QueueNotFound`` when the task's queue, exchange and key now reach no queue.

        Saving the task checked them, but ``TQ["QUEUES"]`` may have changed since. Checked before
        anything is claimed: a claimed run would be sent again, and fail again, at every tick.
        The occurrences stay due; once the routing is fixed the misfire policy says what is sent.
        """
        problem = periodic_task.routing_problem()
        if problem is not None:
            raise QueueNotFound(f"Periodic task {periodic_task.name!r} is not sent: {problem}")

    # -- claiming and sending -------------------------------------------------------------------
    def publishes_in_transaction(self) -> bool:
        """Return whether a message is written in our database transaction (``django://``)."""
        return get_broker().database_alias == self.alias

    def _deliver(
        self,
        periodic_task: PeriodicTask,
        scheduled_for: dt.datetime,
        task_id: str,
        claim: Callable[[], bool],
        now: dt.datetime,
    ) -> Sent | None:
        """Run ``claim``; when it wins, send the occurrence and mark its run sent."""
        if self.publishes_in_transaction():
            with sqlite.write_atomic(self.alias):
                if not claim():
                    return None
                sent_id = self._publish(periodic_task, scheduled_for, task_id)
                self._mark_sent(periodic_task, scheduled_for, now, sent_id)
        else:
            with sqlite.write_atomic(self.alias):
                if not claim():
                    return None
            try:
                sent_id = self._publish(periodic_task, scheduled_for, task_id)
            except PublishError as exc:
                logger.warning(
                    "Periodic task %r (%s) claimed but not sent, will retry: %s",
                    periodic_task.name,
                    scheduled_for.isoformat(),
                    exc,
                )
                return None
            self._mark_sent(periodic_task, scheduled_for, now, sent_id)
        if sent_id != task_id:
            logger.info(
                "Periodic task %r (%s): %s[%s] still holds its unique key; not sent again",
                periodic_task.name,
                scheduled_for.isoformat(),
                periodic_task.task,
                sent_id,
            )
        else:
            logger.info(
                "Sent %s[%s] for periodic task %r (%s)",
                periodic_task.task,
                task_id,
                periodic_task.name,
                scheduled_for.isoformat(),
            )
        return Sent(
            periodic_task=periodic_task.name,
            task=periodic_task.task,
            task_id=sent_id,
            scheduled_for=scheduled_for,
        )

    def _new_claim(
        self,
        periodic_task: PeriodicTask,
        scheduled_for: dt.datetime,
        task_id: str,
        now: dt.datetime,
    ) -> Callable[[], bool]:
        """Return the claim of a new occurrence: insert its run (in a transaction)."""

        def claim() -> bool:
            try:
                with transaction.atomic(using=self.alias):
                    PeriodicTaskRun.objects.using(self.alias).create(
                        periodic_task=periodic_task,
                        scheduled_for=scheduled_for,
                        task_id=task_id,
                        claimed_at=now,
                        claimed_by=self.name,
                    )
            except IntegrityError:
                return False  # another beat claimed it
            rows = PeriodicTask.objects.using(self.alias).filter(pk=periodic_task.pk)
            if periodic_task.one_off and not rows.filter(enabled=True).update(enabled=False):
                transaction.set_rollback(True, using=self.alias)  # another beat ran it
                return False
            rows.update(total_run_count=F("total_run_count") + 1)
            self._advance(periodic_task, scheduled_for)
            return True

        return claim

    def _advance(self, periodic_task: PeriodicTask, scheduled_for: dt.datetime) -> None:
        """Move ``last_run_at`` forward to ``scheduled_for`` (never back)."""
        PeriodicTask.objects.using(self.alias).filter(pk=periodic_task.pk).filter(
            Q(last_run_at__isnull=True) | Q(last_run_at__lt=scheduled_for)
        ).update(last_run_at=scheduled_for)

    def _publish(
        self, periodic_task: PeriodicTask, scheduled_for: dt.datetime, task_id: str
    ) -> str:
        """Send the occurrence; return the id of the task that runs it (a unique task's holder)."""
        return send_task(
            periodic_task.task,
            periodic_task.args,
            periodic_task.kwargs,
            task_id=task_id,
            using=self.alias,
            **periodic_task.call_options(scheduled_for),
        ).id

    def _mark_sent(
        self,
        periodic_task: PeriodicTask,
        scheduled_for: dt.datetime,
        now: dt.datetime,
        task_id: str | None = None,
    ) -> None:
        """Mark the run sent, naming the task that runs it when that is another (unique) task."""
        values: dict[str, Any] = {"sent_at": now}
        if task_id is not None:
            values["task_id"] = task_id
        PeriodicTaskRun.objects.using(self.alias).filter(
            periodic_task=periodic_task, scheduled_for=scheduled_for
        ).update(**values)

    # -- repair and housekeeping ----------------------------------------------------------------
    def republish(self, now: dt.datetime) -> list[Sent]:
        """Send again runs claimed more than ``republish_after`` ago and never marked sent."""
        stale = (
            PeriodicTaskRun.objects.using(self.alias)
            .filter(sent_at__isnull=True, claimed_at__lt=now - self.republish_after)
            .select_related("periodic_task")
            .order_by("claimed_at")[:REPUBLISH_BATCH]
        )
        sent = []
        for run in stale:
            try:
                self._check_routing(run.periodic_task)
            except QueueNotFound as exc:  # left claimed: sent once the routing is fixed
                self._task_outage(run.periodic_task.name).failed(exc, time.monotonic())
                continue
            claim = self._stale_claim(run, now)
            delivered = self._deliver(run.periodic_task, run.scheduled_for, run.task_id, claim, now)
            if delivered is not None:
                logger.warning("Re-sent run %s, claimed by %s", run, run.claimed_by or "?")
                sent.append(delivered)
        return sent

    def _stale_claim(self, run: PeriodicTaskRun, now: dt.datetime) -> Callable[[], bool]:
        """Return the claim of a stale run: take it over, unless its task reached a worker."""

        def claim() -> bool:
            taken = (
                PeriodicTaskRun.objects.using(self.alias)
                .filter(pk=run.pk, sent_at__isnull=True, claimed_at=run.claimed_at)
                .update(claimed_at=now, claimed_by=self.name)
            )
            if not taken:
                return False  # another beat took it over
            backend = get_backend()
            result = backend.get(run.task_id)
            if result is not None and result.worker:  # it was sent: a worker has it
                self._mark_sent(run.periodic_task, run.scheduled_for, now)
                return False
            if result is not None:  # recorded but maybe never published: send it again
                backend.forget(run.task_id)
            return True

        return claim

    def cleanup(self, now: dt.datetime) -> int:
        """Delete runs older than :data:`RUN_RETENTION`, keeping each task's latest."""
        old = (
            PeriodicTaskRun.objects.using(self.alias)
            .filter(scheduled_for__lt=now - RUN_RETENTION)
            .exclude(scheduled_for=F("periodic_task__last_run_at"))
        )
        total = 0
        for _ in range(10):
            batch = list(old.values_list("pk", flat=True)[:1000])
            if not batch:
                break
            total += PeriodicTaskRun.objects.using(self.alias).filter(pk__in=batch).delete()[0]
        if total:
            logger.info("Deleted %d periodic task run(s) older than %s", total, RUN_RETENTION)
        return total
