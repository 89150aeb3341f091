"""OpenTelemetry traces (the ``otel`` extra), on with ``TQ["OTEL"] = True``.

Where a task is enqueued, :func:`inject` opens a producer span (``send <task>``) and writes its
W3C trace context (``traceparent``, and ``tracestate``/``baggage`` if any) into the message's
custom headers, so it is signed with the message and survives parking, the outbox and retries.
Where the task runs, ``task_started`` opens a consumer span (``process <task>``) whose parent is
that context; ``task_postrun`` ends it. Its context stays current until the worker has recorded
the outcome, so what the task's outcome enqueues (the next step of a chain, a chord's body, a
retry) is traced as its child.

Spans follow the OpenTelemetry messaging conventions (``messaging.system``,
``messaging.destination.name``, ``messaging.operation.type``, ``messaging.message.id``...).
django_tq only uses the API: the project configures a tracer provider and exporter (in a prefork
worker, per child in ``worker_process_init``, or before the fork with a processor that starts no
thread). Off, nothing here imports OpenTelemetry and no receiver is connected.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from django_tq import signals
from django_tq.conf import on_reload, tq_settings
from django_tq.message import TaskMessage

SYSTEM = "django_tq"
DISPATCH_UID = "django_tq.tracing"
_enabled = False


@dataclass(kw_only=True, slots=True)
class _Execution:
    """One consumer span of this thread, and the token of its attached context."""

    task_id: str
    span: Any
    token: Any
    is_eager: bool
    ended: bool = False


class _Stack(threading.local):
    """The consumer spans of this thread, innermost last (an eager task can run in a task)."""

    def __init__(self) -> None:
        self.executions: list[_Execution] = []


_stack = _Stack()


def is_enabled() -> bool:
    """Return whether tracing is on."""
    return _enabled


def _attributes(message_id: str, task: str, queue: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": queue,
        "messaging.message.id": message_id,
        "django_tq.task.name": task,
    }


def inject(message: TaskMessage) -> TaskMessage:
    """Return ``message`` with the trace context of a new producer span in its headers.

    ``enqueue()`` calls this before encoding; with tracing off it returns ``message`` as is.
    """
    if not _enabled:
        return message
    from opentelemetry import propagate, trace

    tracer = trace.get_tracer(SYSTEM)
    attributes = _attributes(message.id, message.task, message.queue, "send")
    if message.retries:
        attributes["django_tq.task.retries"] = message.retries
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span(
        f"send {message.task}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        propagate.inject(carrier)
    return replace(message, headers={**message.headers, **carrier})


def _pop_ended() -> None:
    """Detach the contexts of executions that ended and were kept for their outcome."""
    from opentelemetry import context

    while _stack.executions and _stack.executions[-1].ended:
        context.detach(_stack.executions.pop().token)


def _clear() -> None:
    """End and detach every execution of this thread: a worker runs one message at a time, so
    any left when the next starts (kept for its outcome, or cut short) is over."""
    from opentelemetry import context

    while _stack.executions:
        execution = _stack.executions.pop()
        if not execution.ended:
            execution.span.end()
        context.detach(execution.token)


def on_started(sender: Any, request: Any, task_id: str, **kwargs: Any) -> None:
    """Open the consumer span, child of the producer's context found in the headers."""
    from opentelemetry import context, propagate, trace

    if request.is_eager:
        _pop_ended()  # it may run inside a task: keep the enclosing execution
    else:
        _clear()
    # No trace context in the headers (an eager run): the caller's context is the parent.
    parent = propagate.extract(request.headers or {}, context=context.get_current())
    attributes = _attributes(task_id, request.task, request.queue or "", "process")
    attributes["django_tq.task.retries"] = request.retries
    if request.hostname:
        attributes["django_tq.worker"] = request.hostname
    span = trace.get_tracer(SYSTEM).start_span(
        f"process {request.task}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
    )
    token = context.attach(trace.set_span_in_context(span, parent))
    _stack.executions.append(
        _Execution(task_id=task_id, span=span, token=token, is_eager=request.is_eager)
    )


def _running(task_id: str) -> _Execution | None:
    for execution in reversed(_stack.executions):
        if execution.task_id == task_id and not execution.ended:
            return execution
    return None


def on_failed(sender: Any, task_id: str, exception: BaseException, **kwargs: Any) -> None:
    """Record the exception on the span and mark it failed."""
    from opentelemetry.trace import Status, StatusCode

    execution = _running(task_id)
    if execution is not None:
        execution.span.record_exception(exception)
        execution.span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}"))


def on_retried(sender: Any, task_id: str, reason: Any = None, **kwargs: Any) -> None:
    """Note the retry on the span."""
    execution = _running(task_id)
    if execution is not None:
        execution.span.add_event("retry", {"django_tq.retry.reason": repr(reason)[:500]})


def on_postrun(sender: Any, task_id: str, state: str, **kwargs: Any) -> None:
    """End the consumer span; keep its context current until the outcome is recorded."""
    execution = _running(task_id)
    if execution is None:
        return
    execution.span.set_attribute("django_tq.task.state", state)
    execution.span.end()
    execution.ended = True
    if execution.is_eager:  # nothing records an eager outcome: the caller's context comes back
        _pop_ended()


def on_finished(sender: Any, task_id: str, **kwargs: Any) -> None:
    """Detach the ended execution's context once its final state is recorded."""
    if _stack.executions and _stack.executions[-1].task_id == task_id:
        _pop_ended()


_RECEIVERS: tuple[tuple[Any, Any], ...] = (
    (signals.task_started, on_started),
    (signals.task_failed, on_failed),
    (signals.task_retried, on_retried),
    (signals.task_postrun, on_postrun),
    (signals.task_finished, on_finished),
)


def install() -> None:
    """Connect the receivers when ``TQ["OTEL"]`` is on, disconnect them when it is off.

    ``apps.py`` calls this in ``ready()``; it runs again when the settings change.
    """
    global _enabled
    enabled = bool(tq_settings.OTEL)
    if enabled:
        try:
            import opentelemetry.trace  # noqa: F401
        except ImportError as exc:
            raise ImproperlyConfigured(
                'TQ["OTEL"] = True needs OpenTelemetry: pip install "django-tq[otel]".'
            ) from exc
    for signal, receiver in _RECEIVERS:
        if enabled:
            signal.connect(receiver, dispatch_uid=DISPATCH_UID)
        else:
            signal.disconnect(dispatch_uid=DISPATCH_UID)
    _enabled = enabled


@on_reload
def _reinstall() -> None:
    """Follow ``TQ["OTEL"]`` when the settings change (a bad ``TQ`` is reported where it is read)."""
    try:
        install()
    except ImproperlyConfigured:
        pass
