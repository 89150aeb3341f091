"""Run one task message in this process and describe what happened as an :class:`Outcome`.

The worker, eager mode (``ALWAYS_EAGER``, ``Task.apply``) and ``django_tq.testing`` all use
:func:`execute` and :func:`record`, so a task behaves the same in tests as in production.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import signal as signal_module
import time
import traceback as tb
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from django_tq import message as wire_format
from django_tq import serialization, signals, states, unique, workflow
from django_tq.abort import Abort
from django_tq.conf import tq_settings
from django_tq.context import build_request, current_request
from django_tq.enqueue import enqueue
from django_tq.exceptions import (
    EncodeError,
    Ignore,
    Reject,
    Replace,
    Retry,
    SoftTimeLimitExceeded,
    Superseded,
    TaskRevokedError,
    Terminated,
)
from django_tq.folded_ack import FoldedAck
from django_tq.message import TaskMessage
from django_tq.outcome import Outcome
from django_tq.registry import registry
from django_tq.result import EagerResult
from django_tq.result_backends import get_backend
from django_tq.workflow import IGNORED, REPLACED, follow, settle

if TYPE_CHECKING:
    from django_tq.tasks import Task

logger = logging.getLogger("django_tq.execution")

REJECTED = "REJECTED"


def revoked_outcome(task_id: str, *, terminated: str | None = None, traceback: str = "") -> Outcome:
    """Return the outcome of a task revoked while it ran, with ``TaskRevokedError`` as result.

    ``terminated`` is the signal that stopped it; None when it stopped after ``is_aborted()``.
    """
    how = f"terminated ({terminated})" if terminated else "revoked while it ran"
    error = TaskRevokedError(f"Task {task_id} was {how}.")
    return Outcome(
        state=states.REVOKED,
        result=serialization.exception_to_data(error),
        exception=error,
        traceback=traceback,
        terminated=terminated,
    )


def send_revoked(task: Task[Any, Any] | None, task_id: str, outcome: Outcome) -> None:
    """Send ``task_revoked`` for a REVOKED ``outcome`` (Celery's arguments, plus the name)."""
    name = outcome.terminated
    signals.send(
        signals.task_revoked,
        sender=task,
        task_id=task_id,
        terminated=name is not None,
        expired=outcome.expired,
        signum=int(getattr(signal_module, name)) if name else None,
        signal_name=name,
    )


def _call(task: Task[Any, Any], message: TaskMessage, abort: Abort) -> Any:
    args, kwargs = message.args, message.kwargs
    if task.bind:
        args = (task, *args)
    if task.is_async:
        return asyncio.run(abort.run(task.run(*args, **kwargs)))
    return task.run(*args, **kwargs)


def _retry_message(task: Task[Any, Any], message: TaskMessage, retry: Retry) -> TaskMessage:
    return message.with_changes(
        retries=message.retries + 1,
        eta=retry.when,
        queue=retry.queue or message.queue,
        exchange=None,  # a retry goes back to the queue it came from, not through the exchange
        routing_key=None,
    )


def _autoretry(task: Task[Any, Any], message: TaskMessage, exc: BaseException) -> Retry | None:
    """Return the Retry ``autoretry_for`` asks for, or None (re-raise when retries run out)."""
    if not task.autoretry_for or not isinstance(exc, task.autoretry_for):
        return None
    if task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for):
        return None
    options = dict(task.retry_kwargs)
    limit = options.pop("max_retries", task.resolved_max_retries())
    if limit is not None and message.retries >= limit:
        return None
    countdown = options.pop("countdown", None)
    if countdown is None and task.retry_backoff:
        factor = 1 if task.retry_backoff is True else float(task.retry_backoff)
        countdown = min(factor * (2**message.retries), task.retry_backoff_max)
        if task.retry_jitter:
            countdown = random.uniform(0, countdown)
    if countdown is None:
        countdown = task.resolved_retry_delay()
    return Retry(exc=exc, when=timezone.now() + dt.timedelta(seconds=float(countdown)))


def _robust(hook: Any, *args: Any) -> None:
    try:
        hook(*args)
    except Exception:
        logger.exception("Task handler %s failed", getattr(hook, "__qualname__", hook))


def _stores_result(task: Task[Any, Any], message: TaskMessage) -> bool:
    return not message.ignore_result and tq_settings.RESULT_BACKEND is not None


def execute(
    message: TaskMessage, *, hostname: str = "", delivery_count: int = 1, is_eager: bool = False
) -> Outcome:
    """Run ``message``'s task here and return the :class:`Outcome` (never raises for task errors)."""
    task = registry.get(message.task)
    if message.expires is not None and message.expires <= timezone.now():
        expired = Outcome(state=states.REVOKED, result={"reason": "expired"}, expired=True)
        send_revoked(task, message.id, expired)
        return expired
    request = build_request(
        message, hostname=hostname, delivery_count=delivery_count, is_eager=is_eager
    )
    token = current_request.set(request)
    started = time.perf_counter()
    call = {"task_id": message.id, "task": task, "args": message.args, "kwargs": message.kwargs}
    signals.send(signals.task_started, sender=task, request=request, **call)
    signals.send(signals.task_prerun, sender=task, **call)
    try:
        outcome = _run(task, message)
    finally:
        current_request.reset(token)
    # ``_run`` made this outcome for this call alone: set its runtime in place rather than copy
    # it (``dataclasses.replace`` was ~5 µs a task)
    object.__setattr__(outcome, "runtime", time.perf_counter() - started)
    _after(task, message, outcome)
    return outcome


def _run(task: Task[Any, Any], message: TaskMessage) -> Outcome:
    """Run the task where terminate can interrupt it; a terminate, or a revocation the task saw
    with ``is_aborted()``, makes the outcome REVOKED whatever the task did next."""
    abort = Abort(message.id, is_async=task.is_async)
    outcome: Outcome | None = None
    trace = ""
    try:
        with abort:
            outcome = _attempt(task, message, abort)
    except (Terminated, SoftTimeLimitExceeded, asyncio.CancelledError) as exc:
        if not abort.terminated:
            if isinstance(exc, asyncio.CancelledError) or abort.within_a_terminate():
                raise  # not ours: the task's own cancellation, or the eager caller's terminate
            outcome = _failure(exc)  # raised by the task itself, or a soft limit fired late
        trace = tb.format_exc()
    if abort.terminated or abort.aborted:
        if outcome is not None and not trace:
            trace = outcome.traceback
        return revoked_outcome(message.id, terminated=abort.signal_name, traceback=trace)
    assert outcome is not None
    return outcome


def _attempt(task: Task[Any, Any], message: TaskMessage, abort: Abort) -> Outcome:
    try:
        task.before_start(message.id, message.args, message.kwargs)
        retval = _call(task, message, abort)
        if _stores_result(task, message) and message.serializer == "json":
            serialization.to_json(retval)
        return Outcome(state=states.SUCCESS, result=retval)
    except Retry as retry:
        return _retry_outcome(task, message, retry)
    except Ignore:
        return Outcome(state=IGNORED)
    except Replace as replaced:
        return Outcome(state=REPLACED, replacement=replaced.signature)
    except Reject as reject:
        return Outcome(
            state=REJECTED, result={"reason": str(reject.reason)}, requeue=reject.requeue
        )
    except EncodeError as exc:
        return _failure(exc, f"The return value of {task.name} cannot be stored: {exc}")
    except Exception as exc:
        automatic = _autoretry(task, message, exc)
        if automatic is not None:
            return _retry_outcome(task, message, automatic)
        return _failure(exc)


def _retry_outcome(task: Task[Any, Any], message: TaskMessage, retry: Retry) -> Outcome:
    error = retry.exc or retry
    return Outcome(
        state=states.RETRY,
        result=serialization.exception_to_data(error),
        exception=error,
        traceback=tb.format_exc(),
        retry=_retry_message(task, message, retry),
    )


def _failure(exc: BaseException, note: str | None = None) -> Outcome:
    trace = tb.format_exc()
    if note:
        trace = f"{trace}\n{note}"
    return Outcome(
        state=states.FAILURE,
        result=serialization.exception_to_data(exc),
        exception=exc,
        traceback=trace,
    )


def _after(task: Task[Any, Any], message: TaskMessage, outcome: Outcome) -> None:
    """Run the task's handlers and send the outcome's signals (both observe, never raise)."""
    args, kwargs, task_id = message.args, message.kwargs, message.id
    if outcome.state == states.SUCCESS:
        _robust(task.on_success, outcome.result, task_id, args, kwargs)
        signals.send(signals.task_succeeded, sender=task, task_id=task_id, result=outcome.result)
    elif outcome.state == states.FAILURE and outcome.exception is not None:
        _robust(task.on_failure, outcome.exception, task_id, args, kwargs, outcome.traceback)
        signals.send(
            signals.task_failed,
            sender=task,
            task_id=task_id,
            exception=outcome.exception,
            traceback=outcome.traceback,
            args=args,
            kwargs=kwargs,
        )
    elif outcome.state == states.RETRY and outcome.exception is not None:
        _robust(task.on_retry, outcome.exception, task_id, args, kwargs, outcome.traceback)
        signals.send(signals.task_retried, sender=task, task_id=task_id, reason=outcome.exception)
    elif outcome.state == states.REVOKED:
        send_revoked(task, task_id, outcome)
    _robust(
        task.after_return, outcome.state, outcome.result, task_id, args, kwargs, outcome.traceback
    )
    signals.send(
        signals.task_postrun,
        sender=task,
        task_id=task_id,
        task=task,
        state=outcome.state,
        retval=outcome.result,
    )


def _is_final(outcome: Outcome) -> bool:
    """Return whether the task is done with this outcome (no retry, no requeue will run it)."""
    if outcome.retry is not None or outcome.requeue:
        return False
    return outcome.state in states.READY_STATES or outcome.state in (IGNORED, REJECTED)


def _is_last_write(message: TaskMessage, outcome: Outcome) -> bool:
    """Return whether recording ``outcome`` writes nothing after its state: no retry to
    enqueue, no workflow step (chain, chord count, callbacks, group), no unique key to free.

    Only then may the ack go with the state's write: a crash right after it must find nothing
    undone, because the acked message never comes back to finish it.
    """
    return (
        outcome.retry is None
        and outcome.state in states.READY_STATES
        and message.unique_key is None
        and not workflow.follows(message)
    )


def record(
    message: TaskMessage,
    outcome: Outcome,
    *,
    worker: str = "",
    delivery_count: int = 0,
    durable: bool = True,
    fenced: bool = False,
    ack: FoldedAck | None = None,
) -> bool:
    """Store ``outcome`` and enqueue what follows: a retry's next attempt, the next step of a
    workflow; free the unique key of a finished task (all side effects but the ack). Return
    False when nothing was recorded because a newer delivery had taken the task over.

    ``durable=False``: the caller acks the message next, where the result backend's writes are
    durable with the ack (``ResultBackend.is_durable_with``), and the message runs again if
    the ack is lost; the outcome's own write then need not wait to be durable.
    ``fenced=True``: this execution recorded STARTED as delivery ``delivery_count``; if a newer
    delivery has started the task since (this worker was cut off past its lease), the outcome is
    dropped with everything that would follow it (``ResultBackend.store``).
    ``ack``: the message's ack, run with the outcome's write when nothing follows that write
    (see :func:`_is_last_write`); the caller acks as usual unless its ``settled()`` was called.
    """
    task = registry.get(message.task)
    backend = get_backend()
    keep = not message.ignore_result or bool(message.chord)  # a chord counts stored results
    if outcome.state == states.FAILURE:
        keep = keep or task.store_errors_even_if_ignored
    if not _is_last_write(message, outcome):
        ack = None

    def write() -> None:
        if keep and outcome.state not in (IGNORED, REJECTED, REPLACED):
            backend.store(
                message,
                outcome.state,
                result=outcome.result,
                traceback=outcome.traceback,
                worker=worker,
                delivery_count=delivery_count,
                durable=durable,
                fenced=fenced,
                ack=ack,
            )

    try:
        settle(message, outcome, write)  # a chord's count rolls back with a refused write
    except Superseded as exc:
        logger.warning("%s Another worker's run of it stands.", exc)
        return False
    if outcome.retry is not None:
        enqueue(outcome.retry)  # the retry keeps (and extends) the unique lock
    elif _is_final(outcome):
        unique.release(message)
    if outcome.state in states.READY_STATES:
        signals.send(signals.task_finished, sender=task, task_id=message.id, state=outcome.state)
    return True


def update_state(task: Task[Any, Any], state: str, meta: dict[str, Any] | None) -> None:
    """Record a custom state for the running execution of ``task``."""
    request = task.request
    if request.called_directly or request.id is None:
        raise RuntimeError(f"{task.name}.update_state() was called outside a task execution.")
    message = TaskMessage(
        id=request.id,
        task=task.name,
        args=request.args,
        kwargs=request.kwargs,
        queue=request.queue,
        retries=request.retries,
        root_id=request.root_id,
        parent_id=request.parent_id,
        group_id=request.group_id,
    )
    get_backend().store(message, state, result=meta, meta=meta, worker=request.hostname)


def run_eagerly(message: TaskMessage) -> EagerResult[Any]:
    """Run ``message`` now, through serialization, retrying inline like Celery's eager mode."""
    while True:
        outcome = execute(wire_format.round_trip(message), is_eager=True)
        if outcome.retry is None:
            break
        message = outcome.retry.with_changes(eta=None)
    if outcome.state == REPLACED:
        return workflow.replace(message, outcome.replacement or {}, eager=True)
    follow(message, outcome, eager=True)
    result: EagerResult[Any] = EagerResult(message.id, outcome)
    if (
        outcome.exception is not None
        and outcome.state == states.FAILURE
        and tq_settings.EAGER_PROPAGATES
    ):
        raise outcome.exception
    return result


__all__ = [
    "IGNORED",
    "REJECTED",
    "REPLACED",
    "Outcome",
    "build_request",
    "execute",
    "record",
    "revoked_outcome",
    "run_eagerly",
    "send_revoked",
]
