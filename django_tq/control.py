"""Reaching running workers: revocation, inspection and control, for the admin, REST, commands.

Revocations are rows in the database: a worker loads them at start and re-reads new ones every
second, so a revocation reaches every worker on every transport, including workers started
after it, and survives restarts. :func:`inspect` and :func:`broadcast` ask running workers
through the mailbox (:mod:`django_tq.mailbox`): replies come from each worker's parent process
within a tick. Sending a task again (:func:`requeue`) and running a periodic
task outside its schedule (:func:`run_periodic_task`) live here too, so the admin and the REST
API do both the same way.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.db import router
from django.utils import timezone

from django_tq import abort, mailbox, overrides, states
from django_tq.models import PeriodicTask, Revocation
from django_tq.registry import registry
from django_tq.result_backends import get_backend
from django_tq.sqlite import write_atomic

if TYPE_CHECKING:
    from django_tq.result import AsyncResult

#: states in which a revoked task has not started: it is marked REVOKED at once
NOT_STARTED = frozenset({states.PENDING, states.QUEUED, states.RETRY})


def revoke(task_id: str, *, terminate: bool = False, signal: str | int = "SIGTERM") -> None:
    """Revoke ``task_id``: it will not run; with ``terminate`` a running one is stopped.

    Without ``terminate`` a task that is already running finishes, as in Celery (unless it polls
    ``self.is_aborted()``). ``signal`` says how terminate stops it: ``SIGTERM`` (the default),
    ``SIGINT``, ``SIGUSR1`` or ``SIGKILL`` (also spelt ``"TERM"``, ``15``, …); see the worker
    documentation for what each does on each pool. Raise ``ValueError`` for another signal.
    The worker sends ``task_revoked`` when it skips or stops the task.
    """
    name = abort.signal_name(signal)
    alias = router.db_for_write(Revocation) or "default"
    with write_atomic(alias):  # update_or_create reads, then writes
        Revocation.objects.using(alias).update_or_create(
            task_id=task_id,
            # a new date: workers read revocations by date, so they see a revoke again (another
            # signal, e.g. SIGKILL for a task that ignored SIGTERM)
            defaults={"terminate": terminate, "signal": name, "created_at": timezone.now()},
            create_defaults={"terminate": terminate, "signal": name},
        )
    backend = get_backend()
    data = backend.get(task_id)
    if data is None or data.state in NOT_STARTED:
        backend.set_state(task_id, states.REVOKED, result={"reason": "revoked"})


def revoked_since(since: object | None = None) -> list[tuple[str, bool, str]]:
    """Return ``(task_id, terminate, signal)`` of revocations created since ``since`` (all if None)."""
    rows = Revocation.objects.all()
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    return list(rows.values_list("task_id", "terminate", "signal"))


#: states from which a task may be requeued (run again as a new task)
REQUEUEABLE = frozenset({states.FAILURE, states.DEAD, states.REVOKED})


class NotRequeueable(ValueError):
    """The task is not in a state it can be requeued from (FAILURE, DEAD or REVOKED)."""


class ArgumentsMismatch(ValueError):
    """New arguments for a requeued task do not fit the registered task's signature."""


def requeue(
    task_id: str,
    *,
    args: list[Any] | tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    owner: Any = None,
) -> AsyncResult[Any]:
    """Send a failed, dead or revoked task again as a new task; return its result handle.

    The stored arguments and queue are reused unless new ones are given. Raise ``LookupError``
    for an unknown id, :class:`NotRequeueable` for a task in another state and
    :class:`ArgumentsMismatch` when new arguments do not fit the task's signature (checked when
    this process has the task registered).
    """
    data = get_backend().get(task_id)
    if data is None:
        raise LookupError(f"No result is stored for task {task_id!r}.")
    if data.state not in REQUEUEABLE:
        raise NotRequeueable(
            f"Only FAILURE, DEAD or REVOKED tasks can be requeued; {task_id} is {data.state}."
        )
    new_args = data.args if args is None else args
    new_kwargs = data.kwargs if kwargs is None else kwargs
    if args is not None or kwargs is not None:
        mismatch = registry.signature_mismatch(data.task_name, new_args or (), new_kwargs or {})
        if mismatch:
            raise ArgumentsMismatch(mismatch)
    return registry.sender(data.task_name).apply_async(
        new_args, new_kwargs, queue=queue or data.queue or None, owner=owner
    )


def run_periodic_task(periodic_task: PeriodicTask, *, by: str) -> AsyncResult[Any]:
    """Send one run of ``periodic_task`` now, outside its schedule (which stays as it is).

    The run is recorded (``PeriodicTaskRun``, claimed ``by``) and counted, as a scheduled one.
    """
    task_id = str(uuid.uuid4())
    sent = registry.sender(periodic_task.task).apply_async(
        periodic_task.args,
        periodic_task.kwargs,
        task_id=task_id,
        **periodic_task.call_options(timezone.now()),
    )
    periodic_task.record_sent_now(task_id, by=by)
    return sent


# -- remote control of running workers (the mailbox: django_tq.mailbox) -------------------------
class Inspect:
    """Ask running workers what they are doing (Celery's ``app.control.inspect()``).

    Each method returns ``{worker name: reply}`` for the workers that answered within
    ``timeout`` seconds (all live workers, or those in ``destination``); a worker that does not
    answer in time is missing from the dict, never waited on longer.
    """

    def __init__(self, destination: list[str] | None = None, timeout: float = 2.0) -> None:
        self.destination = destination
        self.timeout = timeout

    def _call(self, name: str) -> dict[str, Any]:
        replies = mailbox.broadcast(name, destination=self.destination, timeout=self.timeout)
        return {reply.hostname: reply.payload for reply in replies}

    def ping(self) -> dict[str, Any]:
        """Return ``{worker: "pong"}``."""
        return self._call("ping")

    def active(self) -> dict[str, Any]:
        """Return the tasks each worker runs now: id, name, args, kwargs, pid, started, runtime."""
        return self._call("active")

    def reserved(self) -> dict[str, Any]:
        """Return the messages each worker holds to run next (prefetched, or waiting for a
        rate-limit token): id, name, args, kwargs, queue, priority, pid."""
        return self._call("reserved")

    def scheduled(self) -> dict[str, Any]:
        """Return the messages each worker holds until their ETA: the same, and ``eta``."""
        return self._call("scheduled")

    def registered(self) -> dict[str, Any]:
        """Return the task names each worker knows."""
        return self._call("registered")

    def stats(self) -> dict[str, Any]:
        """Return pool, concurrency, processed, uptime, memory per child, broker and database."""
        return self._call("stats")

    def revoked(self) -> dict[str, Any]:
        """Return the revoked task ids each worker has loaded."""
        return self._call("revoked")

    def active_queues(self) -> dict[str, Any]:
        """Return the queues each worker consumes."""
        return self._call("active_queues")

    def conf(self) -> dict[str, Any]:
        """Return each worker's ``TQ`` settings (the broker URL without its password)."""
        return self._call("conf")


def inspect(destination: list[str] | None = None, timeout: float = 2.0) -> Inspect:
    """Return an :class:`Inspect` for all workers, or those named in ``destination``."""
    return Inspect(destination, timeout)


def broadcast(
    name: str,
    arguments: dict[str, Any] | None = None,
    *,
    destination: list[str] | None = None,
    timeout: float = 2.0,
    reply: bool = True,
) -> list[mailbox.Reply]:
    """Send control command ``name`` to the workers; return their replies (``reply=True``)."""
    return mailbox.broadcast(name, arguments, destination=destination, timeout=timeout, reply=reply)


def shutdown(destination: list[str] | None = None, timeout: float = 2.0) -> list[mailbox.Reply]:
    """Ask the workers to shut down warm (running tasks finish; nothing is lost)."""
    return broadcast("shutdown", destination=destination, timeout=timeout)


def pool_grow(
    n: int = 1, *, destination: list[str] | None = None, timeout: float = 2.0
) -> list[mailbox.Reply]:
    """Add ``n`` consumers to each worker's pool (prefork, threads)."""
    return broadcast("pool_grow", {"n": n}, destination=destination, timeout=timeout)


def pool_shrink(
    n: int = 1, *, destination: list[str] | None = None, timeout: float = 2.0
) -> list[mailbox.Reply]:
    """Take ``n`` consumers from each worker's pool; they finish their running task first."""
    return broadcast("pool_shrink", {"n": n}, destination=destination, timeout=timeout)


def add_consumer(
    queue: str, *, destination: list[str] | None = None, timeout: float = 2.0
) -> list[mailbox.Reply]:
    """Have the workers consume ``queue`` too (their consumers restart warm on the new list)."""
    return broadcast("add_consumer", {"queue": queue}, destination=destination, timeout=timeout)


def cancel_consumer(
    queue: str, *, destination: list[str] | None = None, timeout: float = 2.0
) -> list[mailbox.Reply]:
    """Have the workers stop consuming ``queue`` (refused for a worker's only queue)."""
    return broadcast("cancel_consumer", {"queue": queue}, destination=destination, timeout=timeout)


def rate_limit(task_name: str, rate: str | None) -> None:
    """Limit ``task_name`` to ``rate`` (``"10/m"``) on every worker until reset (``None``).

    Durable, like a revocation: workers read it within a second, also workers started later.
    Raise ``ValueError`` for a rate that does not parse.
    """
    overrides.set_rate_limit(task_name, rate)


def time_limit(task_name: str, hard: float | None, soft: float | None = None) -> None:
    """Set ``task_name``'s hard and soft time limits on every worker until reset (``None``)."""
    overrides.set_time_limits(task_name, hard, soft)
