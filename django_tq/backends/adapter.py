"""A ``django.tasks`` Task as a django_tq task: what the worker runs for :class:`TQTaskBackend`.

:func:`register` wraps a Django ``Task`` in a :class:`DjangoTaskAdapter` and puts it in
django_tq's registry under the Task's ``module_path``. The backend calls it when Django validates
a Task for it, which happens when the Task is declared (``@task`` in an app's ``tasks.py``, which
every process imports at start-up) and on each ``using()`` copy. The worker runs only what the
registry holds, as for ``@task`` tasks: a message naming any other dotted path is dead-lettered as
an unknown task, and nothing is ever imported because a message names it.

In the worker the adapter sends Django's ``task_started`` just before the function runs, passes
it a ``TaskContext`` when the Task ``takes_context``, and returns what it returns normalized to
plain JSON (as Django does: a tuple arrives as a list, a ``datetime`` fails the task with
``TypeError``). Django's ``task_finished`` is sent once the outcome is stored (from django_tq's own
``task_finished``), so a receiver that reads the result sees the final one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import django_tq.backends.compat as compat
import django_tq.backends.priority as priority
import django_tq.backends.results as results
from django_tq import signals
from django_tq.exceptions import Terminated
from django_tq.registry import registry
from django_tq.result_backends import get_backend
from django_tq.tasks import Task

logger = logging.getLogger("django_tq.backends")

#: the header naming the ``TASKS`` alias a Task was enqueued through
BACKEND_HEADER = "django_task_backend"


class BaseExceptionRaised(Exception):
    """A django.tasks Task raised a ``BaseException`` such as ``SystemExit``: a failure.

    Django records those as failures instead of letting them end the worker; its arguments are
    the original class's dotted path and message, which the ``TaskResult`` reports.
    """


#: classes that keep their meaning (stop the process, cancel, terminate) instead of failing
PASS_THROUGH: tuple[type[BaseException], ...] = (
    KeyboardInterrupt,
    GeneratorExit,
    asyncio.CancelledError,
    Terminated,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Running:
    """The Django ``TaskResult`` of the execution running now, and its backend alias."""

    task_id: str
    alias: str
    task_result: Any


_running: ContextVar[Running | None] = ContextVar("django_tq_django_task", default=None)


def _failure_of(exc: BaseException) -> BaseExceptionRaised | None:
    """Return the failure to raise instead of a ``SystemExit`` and the like (which must not stop
    the worker); None for an exception that keeps its meaning."""
    if isinstance(exc, (Exception, *PASS_THROUGH)):
        return None
    cls = type(exc)
    return BaseExceptionRaised(f"{cls.__module__}.{cls.__qualname__}", str(exc))


def _context() -> Any:
    running = _running.get()
    assert running is not None, "a django.tasks Task ran outside its adapter's execution"
    return compat.TaskContext(task_result=running.task_result)


@contextmanager
def _failures_as_exceptions() -> Iterator[None]:
    """Raise a :class:`BaseExceptionRaised` for a ``SystemExit`` and the like raised inside."""
    try:
        yield
    except BaseException as exc:
        failure = _failure_of(exc)
        if failure is None:
            raise
        raise failure from exc


def _runner(func: Callable[..., Any], takes_context: bool) -> Callable[..., Any]:
    """Return the function the adapter runs: ``func`` with the context, normalized result."""

    def arguments(args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (_context(), *args) if takes_context else args

    if inspect.iscoroutinefunction(func):

        async def run(adapter: DjangoTaskAdapter, *args: Any, **kwargs: Any) -> Any:
            with _failures_as_exceptions():
                value = await func(*arguments(args), **kwargs)
            return compat.normalize_json(value)

    else:

        def run(adapter: DjangoTaskAdapter, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            with _failures_as_exceptions():
                value = func(*arguments(args), **kwargs)
            return compat.normalize_json(value)

    parameters = list(inspect.signature(func).parameters.values())
    if takes_context:
        parameters = parameters[1:]  # the context is not an argument of enqueue()
    adapter_parameter = inspect.Parameter("adapter", inspect.Parameter.POSITIONAL_ONLY)
    run.__signature__ = inspect.Signature([adapter_parameter, *parameters])  # type: ignore[attr-defined]
    run.__module__, run.__qualname__, run.__name__ = (
        func.__module__,
        func.__qualname__,
        func.__name__,
    )
    run.__doc__ = func.__doc__
    return run


class DjangoTaskAdapter(Task[..., Any]):
    """Runs a ``django.tasks`` Task on django_tq's worker (registered under its module path)."""

    def __init__(self, django_task: Any) -> None:
        self.django_task = django_task
        queue = django_task.queue_name
        super().__init__(
            _runner(django_task.func, django_task.takes_context),
            name=django_task.module_path,
            bind=True,
            # Django's default queue is TQ["DEFAULT_QUEUE"], after TASK_ROUTES
            queue=None if queue == compat.DEFAULT_TASK_QUEUE_NAME else queue,
            priority=priority.to_level(django_task.priority),
        )

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Build the running ``TaskResult`` and send Django's ``task_started``."""
        request = self.request
        alias = str(request.headers.get(BACKEND_HEADER) or self.django_task.backend)
        data = get_backend().get(task_id) if not request.is_eager else None
        task_result = results.running(
            self.django_task,
            task_id,
            data,
            alias=alias,
            args=list(args),
            kwargs=kwargs,
            attempts=request.retries + max(1, request.delivery_count),
            worker=request.hostname,
        )
        _running.set(Running(task_id=task_id, alias=alias, task_result=task_result))
        send(compat.task_started, alias, task_result)


def send(signal: Any, alias: str, task_result: Any) -> None:
    """Send one of Django's task signals as its backends do (sender: the backend class)."""
    try:
        sender = type(compat.task_backends[alias])
    except Exception:  # not in this process's TASKS: the receivers still hear of the task
        logger.warning(
            "TASKS has no backend %r in this process: Django's task signals for %s[%s] are "
            "sent with sender None",
            alias,
            task_result.task.module_path,
            task_result.id,
        )
        sender = None
    signals.send(signal, sender=sender, task_result=task_result)


def register(django_task: Any) -> DjangoTaskAdapter:
    """Return the adapter registered for ``django_task``'s function, registering one if needed."""
    name = django_task.module_path
    if name in registry:
        existing = registry.get(name)
        if (
            isinstance(existing, DjangoTaskAdapter)
            and existing.django_task.func is django_task.func
        ):
            return existing
    adapter = DjangoTaskAdapter(django_task)
    registry.register(adapter)
    return adapter


def adapter_for(name: str) -> DjangoTaskAdapter | None:
    """Return the adapter registered as ``name``, or None (unknown, or a django_tq task)."""
    if name not in registry:
        return None
    task = registry.get(name)
    return task if isinstance(task, DjangoTaskAdapter) else None


def _on_finished(sender: Any, task_id: str = "", state: str = "", **kwargs: Any) -> None:
    """django_tq's ``task_finished`` receiver: send Django's for a django.tasks Task."""
    if not isinstance(sender, DjangoTaskAdapter):
        return
    running = _running.get()
    alias = running.alias if running is not None and running.task_id == task_id else None
    alias = alias or sender.django_task.backend
    data = get_backend().get(task_id)
    if data is None:  # no result backend: what the outcome says is all there is
        data = results.bare_data(task_id, state, sender.name)
    send(compat.task_finished, alias, results.build(sender.django_task, data, alias=alias))


def connect_signals() -> None:
    """Send Django's ``task_finished`` from django_tq's (once per process, whatever calls it)."""
    signals.task_finished.connect(
        _on_finished, dispatch_uid="django_tq.backends.task_finished", weak=False
    )
