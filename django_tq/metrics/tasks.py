"""Task metrics, counted where tasks run: a tally the consumer gives each task it ran.

``connect()`` creates the metrics and the :class:`TaskTally` (the worker's parent calls it before
its pool starts, so prefork children inherit both); until then the hot path pays nothing. The
consumer calls :meth:`TaskTally.observe` once per task, after recording its outcome: a few dict
and list updates in the process's memory. A flusher thread writes what was counted to the metrics
every :data:`FLUSH_SECONDS` (and the consumer once more when it stops), so a scrape lags by at
most that long, and a child killed outright (SIGKILL, a hard time limit) loses at most that
window's counts. In a prefork worker the values go to the multiprocess directory (see
:mod:`.multiprocess`), one file per child, and the parent's exporter adds them up.
"""

from __future__ import annotations

import logging
import os
import threading
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from django.db.models.signals import post_save

from django_tq import states
from django_tq.message import TaskMessage
from django_tq.models import DeadLetter
from django_tq.outcome import Outcome

logger = logging.getLogger("django_tq.metrics")

#: runtime buckets, seconds: from a fast lookup to a long report
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
#: queue wait buckets, seconds: from an idle queue to a backlog of hours
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 14400)
#: how often what a process counted is written to its metrics (how far a scrape may lag)
FLUSH_SECONDS = 0.5


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskMetrics:
    """The metric objects the tally writes to."""

    tasks: Any
    runtime: Any
    queue_wait: Any
    retries: Any
    dead_letters: Any
    #: labelled children already looked up: ``labels()`` takes a lock, a dict lookup does not
    children: dict[tuple[str, tuple[str, ...]], Any] = field(default_factory=dict)

    def child(self, name: str, *labels: str) -> Any:
        """Return the metric ``name`` with ``labels`` (cached)."""
        key = (name, labels)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = getattr(self, name).labels(*labels)
        return found


def build() -> TaskMetrics:
    """Create the task metrics (unregistered: an exporter collects them, see ``exporter``)."""
    from prometheus_client import Counter, Histogram

    labels = ("task", "queue")
    return TaskMetrics(
        tasks=Counter(
            "django_tq_tasks",
            "Task executions by outcome state (SUCCESS, FAILURE, RETRY, REVOKED, ...).",
            (*labels, "state"),
            registry=None,
        ),
        runtime=Histogram(
            "django_tq_task_runtime_seconds",
            "Time a task took to run, its handlers included.",
            labels,
            buckets=RUNTIME_BUCKETS,
            registry=None,
        ),
        queue_wait=Histogram(
            "django_tq_task_queue_wait_seconds",
            "Time from a message's publish (or its ETA, if later) to a worker starting it.",
            labels,
            buckets=WAIT_BUCKETS,
            registry=None,
        ),
        retries=Counter(
            "django_tq_task_retries", "Retries a task asked for.", labels, registry=None
        ),
        dead_letters=Counter(
            "django_tq_dead_letters",
            "Messages kept as dead letters (they could not run).",
            ("queue",),
            registry=None,
        ),
    )


class _Counts:
    """What one task name on one queue did since the last flush."""

    __slots__ = ("by_state", "retries", "runtime", "runtime_sum", "wait", "wait_sum")

    def __init__(self) -> None:
        self.by_state: dict[str, int] = {}
        self.retries = 0
        #: observations per bucket (not cumulative), the last one +Inf
        self.runtime = [0] * (len(RUNTIME_BUCKETS) + 1)
        self.runtime_sum = 0.0
        self.wait = [0] * (len(WAIT_BUCKETS) + 1)
        self.wait_sum = 0.0


def add_to_histogram(child: Any, per_bucket: list[int], total: float) -> None:
    """Add observations counted per bucket (not cumulative) and their sum to a labelled
    ``Histogram``: what ``observe()`` does one value at a time, in one write per bucket touched.

    prometheus_client has no public call for it: this writes the child's ``_buckets`` and
    ``_sum`` values as ``observe()`` does (tests/observability checks both agree).
    """
    for value, count in zip(child._buckets, per_bucket, strict=True):
        if count:
            value.inc(count)
    child._sum.inc(total)


class TaskTally:
    """Count the tasks this process ran in memory; write the counts to the metrics when due."""

    def __init__(self, metrics: TaskMetrics, *, interval: float = FLUSH_SECONDS) -> None:
        self.metrics = metrics
        self.interval = interval
        self._counts: dict[tuple[str, str], _Counts] = {}
        self._lock = threading.Lock()  # consumers of a threads pool share the tally
        self._stopped = threading.Event()
        self._flusher_pid = 0  #: the process whose flusher thread runs (prefork: each child)

    def observe(self, message: TaskMessage, outcome: Outcome, started_at: float) -> None:
        """Count ``outcome`` of ``message``, started at ``started_at`` (``time.time()``); an
        expired message counts as REVOKED, with no runtime or queue wait."""
        key = (message.task, message.queue)
        ready = message.sent_at
        if ready is not None and message.eta is not None and message.eta > ready:
            ready = message.eta
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                counts = self._counts[key] = _Counts()
                if self._flusher_pid != os.getpid():
                    self._start_flusher()
            by_state = counts.by_state
            by_state[outcome.state] = by_state.get(outcome.state, 0) + 1
            if outcome.state == states.RETRY:
                counts.retries += 1
            elif outcome.expired:
                return  # REVOKED unrun: it neither ran nor waited to run
            runtime = outcome.runtime
            counts.runtime[bisect_left(RUNTIME_BUCKETS, runtime)] += 1
            counts.runtime_sum += runtime
            if ready is not None:
                wait = max(0.0, started_at - ready.timestamp())
                counts.wait[bisect_left(WAIT_BUCKETS, wait)] += 1
                counts.wait_sum += wait

    def flush(self) -> None:
        """Write what was counted since the last flush to the metrics."""
        with self._lock:
            counted, self._counts = self._counts, {}
        metrics = self.metrics
        for (task, queue), counts in counted.items():
            for state, count in counts.by_state.items():
                metrics.child("tasks", task, queue, state).inc(count)
            if counts.retries:
                metrics.child("retries", task, queue).inc(counts.retries)
            add_to_histogram(
                metrics.child("runtime", task, queue), counts.runtime, counts.runtime_sum
            )
            if any(counts.wait):
                add_to_histogram(
                    metrics.child("queue_wait", task, queue), counts.wait, counts.wait_sum
                )

    def stop(self) -> None:
        """Flush, and stop the flusher thread."""
        self._stopped.set()
        self.flush()

    def _start_flusher(self) -> None:
        self._flusher_pid = os.getpid()
        threading.Thread(
            target=self._flush_until_stopped, name="django_tq-metrics", daemon=True
        ).start()

    def _flush_until_stopped(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.flush()
            except Exception:
                logger.exception("Writing the task metrics failed; the counts are lost")


_tally: TaskTally | None = None
DISPATCH_UID = "django_tq.metrics.tasks"


def is_connected() -> bool:
    """Return whether the task metrics are on in this process."""
    return _tally is not None


def on_dead_letter(sender: Any, instance: DeadLetter, created: bool, **kwargs: Any) -> None:
    """Count a dead letter when its row is created."""
    if _tally is not None and created:
        _tally.metrics.child("dead_letters", instance.queue).inc()


def connect() -> TaskTally:
    """Create the metrics and their tally (once) and count dead letters; return the tally."""
    global _tally
    if _tally is None:
        _tally = TaskTally(build())
        post_save.connect(on_dead_letter, sender=DeadLetter, dispatch_uid=DISPATCH_UID)
    return _tally


def disconnect() -> None:
    """Flush and stop the tally, stop counting dead letters, and forget the metrics."""
    global _tally
    post_save.disconnect(sender=DeadLetter, dispatch_uid=DISPATCH_UID)
    if _tally is not None:
        _tally.stop()
    _tally = None
