"""Declaring tasks: the ``@task`` decorator and the ``Task`` class it builds.

``@task`` (also spelled ``shared_task``, to ease moving from Celery) wraps a function in a
:class:`Task` and registers it under ``"<module>.<function>"`` (or ``name=``). Calling the task
runs the function inline; ``delay``/``apply_async`` enqueue it; ``apply`` runs it eagerly through
the same execution path a worker uses.

``Task`` sits above the canvas, ``execution`` and ``result``, which it uses; they reach a task by
name through the registry, which this module tells how to make the stand-in of a task only the
workers know (its last line).
"""

from __future__ import annotations

import datetime as dt
import enum
import inspect
import os
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import (
    Any,
    Concatenate,
    Generic,
    Literal,
    NoReturn,
    ParamSpec,
    TypeVar,
    overload,
)

from django.utils import timezone

from django_tq import abort, execution, off_loop, rate_limits, routing, unique
from django_tq import enqueue as enqueue_module
from django_tq.broker import compression
from django_tq.broker.retry_policy import RetryPolicy
from django_tq.canvas import Signature, chunks, group, links_of, xmap, xstarmap
from django_tq.conf import on_reload, tq_settings
from django_tq.context import DIRECT_CALL, Request, current_request
from django_tq.exceptions import MaxRetriesExceededError, Replace, Retry
from django_tq.message import TaskMessage
from django_tq.publishers import DEFAULT_BATCH_SIZE, Publisher
from django_tq.registry import registry
from django_tq.result import AsyncResult, EagerResult

P = ParamSpec("P")
R = TypeVar("R")


class Unset(enum.Enum):
    """An option not given, told apart from ``None`` (``max_retries=None`` retries for ever)."""

    FROM_SETTINGS = "from settings"


#: ``max_retries`` not given: ``TQ["MAX_RETRIES"]`` decides
FROM_SETTINGS = Unset.FROM_SETTINGS

#: options ``@task(...)`` accepts, with their defaults (None: from settings or the broker)
TASK_OPTIONS: dict[str, Any] = {
    "queue": None,
    "exchange": None,
    "routing_key": None,
    "priority": None,
    "max_retries": FROM_SETTINGS,
    "default_retry_delay": None,
    "autoretry_for": (),
    "dont_autoretry_for": (),
    "retry_kwargs": {},
    "retry_backoff": False,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "acks_late": None,
    "reject_on_worker_lost": None,
    "time_limit": None,
    "soft_time_limit": None,
    "expires": None,
    "ignore_result": False,
    "store_errors_even_if_ignored": False,
    "serializer": None,
    "compression": None,
    "track_started": None,
    "rate_limit": None,
    "rate_limit_scope": rate_limits.GLOBAL,
    "unique": False,
    "unique_ttl": None,
}

#: options ``apply_async`` accepts
CALL_OPTIONS = frozenset(
    {
        "countdown", "eta", "expires", "queue", "exchange", "routing_key", "priority", "task_id", "headers", "using",
        "owner", "ignore_result", "serializer", "retries", "parent_id", "root_id", "group_id",
        "time_limit", "soft_time_limit", "unique_key", "unique_ttl", "retry", "retry_policy", "shadow", "add_to_parent",
        "compression", "publisher",
    }
)  # fmt: skip
#: ``apply_async`` options that place a call in a workflow (see ``django_tq.canvas``)
WORKFLOW_OPTIONS = frozenset({"link", "link_error", "chain", "chord"})
_ALL_OPTIONS = CALL_OPTIONS | WORKFLOW_OPTIONS


def _as_datetime(value: dt.datetime | float | int | None, now: dt.datetime) -> dt.datetime | None:
    """Read an ``eta``/``expires`` value: seconds from now, a naive (``TIME_ZONE``) or aware datetime."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return now + dt.timedelta(seconds=value)
    if isinstance(value, dt.timedelta):
        return now + value
    if timezone.is_naive(value):
        return timezone.make_aware(value, timezone.get_default_timezone())
    return value


def _limit(options: dict[str, Any], key: str, task_value: Any, default: Any) -> float | None:
    """Return a time limit from the call options, else the task, else settings (None: none)."""
    for value in (options.get(key), task_value, default):
        if value is not None:
            return float(value)
    return None


class Task(Generic[P, R]):
    """A registered task: a function plus its options.

    Subclass it for shared behaviour (``@task(base=MyTask)``) and override the handlers
    ``before_start``, ``on_success``, ``on_failure``, ``on_retry`` and ``after_return``.
    """

    name: str
    bind: bool = False
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    priority: int | None = None
    max_retries: int | Unset | None = FROM_SETTINGS  #: None: retry for ever, as in Celery
    default_retry_delay: float | None = None
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    acks_late: bool | None = None
    reject_on_worker_lost: bool | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    expires: float | dt.datetime | None = None
    ignore_result: bool = False
    store_errors_even_if_ignored: bool = False
    serializer: str | None = None
    compression: str | None = (
        None  #: ``"gzip"``, ``"bzip2"``, ``"zlib"`` (None: ``TASK_COMPRESSION``)
    )
    track_started: bool | None = None
    rate_limit: str | float | None = None  #: ``"10/s"``, ``"100/m"``, ``"1000/h"`` or per second
    rate_limit_scope: str = rate_limits.GLOBAL  #: ``"global"`` (all workers) or ``"worker"``
    unique: bool | tuple[str, ...] = False  #: True (all arguments) or the names of arguments
    unique_ttl: float | None = None  #: seconds (None: ``UNIQUE_TTL``)
    rate: rate_limits.Rate | None  #: ``rate_limit``, parsed at declaration

    def __init__(self, func: Callable[..., R], *, name: str | None = None, **options: Any) -> None:
        unknown = set(options) - set(TASK_OPTIONS) - {"bind"}
        if unknown:
            raise TypeError(
                f"Unknown task option(s) for {func.__qualname__}: {', '.join(sorted(unknown))}"
            )
        self.run = func
        self.name = name or f"{func.__module__}.{func.__name__}"
        self.origin = f"{func.__module__}.{func.__qualname__}"
        for key, value in options.items():
            setattr(self, key, value)
        if self.priority is not None and not 0 <= int(self.priority) <= 9:
            raise ValueError(f"priority must be 0-9 (9 highest), got {self.priority!r}")
        self.is_async = inspect.iscoroutinefunction(func)
        self.rate = rate_limits.parse_rate(self.rate_limit)
        if self.rate_limit_scope not in rate_limits.SCOPES:
            raise ValueError(
                f"rate_limit_scope must be one of {rate_limits.SCOPES}, got {self.rate_limit_scope!r}"
            )
        self._check_unique()
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__
        self.__module__ = func.__module__
        self.__qualname__ = func.__qualname__
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    @cached_property
    def signature(self) -> inspect.Signature:
        """Return the call signature of the task (without ``self`` for a bound task)."""
        signature = inspect.signature(self.run)
        if self.bind:
            parameters = list(signature.parameters.values())[1:]
            signature = signature.replace(parameters=parameters)
        return signature

    def _check_unique(self) -> None:
        if isinstance(self.unique, str):
            self.unique = (self.unique,)
        if self.unique is True or self.unique is False:
            return
        self.unique = tuple(self.unique)
        unknown = [name for name in self.unique if name not in self.signature.parameters]
        if unknown:
            raise ValueError(
                f"unique names argument(s) {', '.join(unknown)} that {self.name} does not take"
            )

    def _unique_key(
        self,
        args: tuple[Any, ...] | list[Any] | None,
        kwargs: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> str | None:
        if options.get("unique_key"):
            return unique.fit(str(options["unique_key"]))
        return self.unique_key_for(tuple(args or ()), dict(kwargs or {}))

    def unique_key_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """Return the unique key of a call with these arguments (None: the task is not unique)."""
        if not self.unique:
            return None
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        if isinstance(self.unique, tuple):
            arguments = {name: arguments[name] for name in self.unique}
        return unique.build_key(self.name, arguments)

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` if the task cannot be called with these arguments."""
        self.signature.bind(*args, **kwargs)

    # -- calling ------------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function inline, in this process (no queue, no result row)."""
        if self.bind:
            return self.run(self, *args, **kwargs)
        return self.run(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Enqueue the task with these arguments; return its result handle."""
        return self.apply_async(args, kwargs)

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Enqueue when the current transaction commits (the id is usable at once)."""
        return self.apply_async(args, kwargs, publish_on_commit=True)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Enqueue the task with these arguments without blocking the event loop."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        publish_on_commit: bool | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Enqueue like :meth:`apply_async`, in ``sync_to_async(thread_sensitive=True)``."""
        return await off_loop.to_thread_sensitive(
            self._apply_async, args, kwargs, publish_on_commit, options
        )

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        publish_on_commit: bool | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Enqueue the task with options (``countdown``, ``eta``, ``queue``, ``priority``, …).

        Called in an event loop (an ``async def`` view), it enqueues in a helper thread and
        waits for it (see ``django_tq.off_loop``); ``await t.aapply_async()`` does not wait.
        """
        return off_loop.call_off_loop(self._apply_async, args, kwargs, publish_on_commit, options)

    def _apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None,
        kwargs: dict[str, Any] | None,
        publish_on_commit: bool | None,
        options: dict[str, Any],
    ) -> AsyncResult[R]:
        if options and not options.keys() <= _ALL_OPTIONS:
            unknown = set(options) - _ALL_OPTIONS
            raise TypeError(f"Unknown apply_async option(s): {', '.join(sorted(unknown))}")
        policy = RetryPolicy.from_options(options.get("retry"), options.get("retry_policy"))
        message = self.build_message(args, kwargs, options)
        if tq_settings.ALWAYS_EAGER:
            return self._apply_unique_eagerly(message, options.get("using"))
        owner = options.get("owner")
        owner_id = getattr(owner, "pk", owner)
        publisher: Publisher | None = options.get("publisher")
        task_id = enqueue_module.enqueue(
            message,
            using=options.get("using"),
            owner_id=owner_id,
            on_commit=publish_on_commit,
            policy=policy,
            burst=publisher.burst_for(policy) if publisher is not None else None,
        )
        if publisher is not None:
            publisher.added()
        return AsyncResult(task_id, task_name=self.name)

    def build_message(
        self,
        args: tuple[Any, ...] | list[Any] | None,
        kwargs: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> TaskMessage:
        """Resolve routing and options into the message that will be sent."""
        route = _route_of(self.name, args, kwargs)
        # add_to_parent=False: not a child of the running task (nor in its workflow's tree)
        parent = current_request.get() if options.get("add_to_parent", True) else None
        eta = options.get("eta")
        countdown = options.get("countdown")
        expires = options.get("expires", self.expires)
        if eta is not None or countdown is not None or expires is not None:
            now = timezone.now()
            eta = _as_datetime(eta, now)
            if countdown is not None:
                eta = now + dt.timedelta(seconds=float(countdown))
            expires = _as_datetime(expires, now)
        # Precedence as in Celery: call options, then the task's own options, then TASK_ROUTES.
        priority = options.get("priority", self.priority)
        if priority is None and route:
            priority = route.get("priority")
        if priority is not None and not 0 <= int(priority) <= 9:
            raise ValueError(f"priority must be 0-9 (9 highest), got {priority!r}")
        # Where, level by level as before: the call, then the task, then TASK_ROUTES.
        where = (
            (routing.destination(options) if options else None)
            or _resolved(self.queue, self.exchange, self.routing_key)
            or (routing.destination(route) if route else None)
            or _default_destination()
        )
        task_id = str(options.get("task_id") or new_task_id())
        root_id = (
            options.get("root_id") or (parent.root_id or parent.id if parent else None) or task_id
        )
        headers = options.get("headers")
        return TaskMessage(
            id=task_id,
            task=self.name,
            args=tuple(args) if args else (),
            kwargs=dict(kwargs) if kwargs else {},
            queue=where.queue,
            exchange=where.exchange,
            routing_key=where.routing_key,
            priority=priority,
            eta=eta,
            expires=expires,
            retries=int(options.get("retries", 0)),
            root_id=root_id,
            parent_id=options.get("parent_id") or (parent.id if parent else None),
            group_id=options.get("group_id"),
            ignore_result=bool(options.get("ignore_result", self.ignore_result)),
            time_limit=_limit(options, "time_limit", self.time_limit, tq_settings.TASK_TIME_LIMIT),
            soft_time_limit=_limit(
                options, "soft_time_limit", self.soft_time_limit, tq_settings.TASK_SOFT_TIME_LIMIT
            ),
            headers=dict(headers) if headers else {},
            serializer=options.get("serializer") or self.serializer or tq_settings.TASK_SERIALIZER,
            compression=compression.check(
                options.get("compression") or self.compression or tq_settings.TASK_COMPRESSION
            ),
            unique_key=(
                self._unique_key(args, kwargs, options)
                if self.unique or options.get("unique_key")
                else None
            ),
            unique_ttl=options.get("unique_ttl", self.unique_ttl),
            shadow=options.get("shadow") or self.shadow_name(args, kwargs, options),
            **(_workflow_fields(options) if options else {}),
        )

    def shadow_name(
        self,
        args: tuple[Any, ...] | list[Any] | None,
        kwargs: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> str | None:
        """Return the name logs show for this call (override it; None: the task's name)."""
        return None

    def apply(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task now, in this process, through serialization; return an EagerResult."""
        return self._apply_message(self.build_message(args, kwargs, options))

    def _apply_unique_eagerly(self, message: TaskMessage, using: str | None) -> AsyncResult[R]:
        """Run ``message`` eagerly, unless a task holding its unique key is queued or running."""
        if message.unique_key is None:
            return self._apply_message(message)
        holder = unique.acquire(message, using=using or enqueue_module.default_alias())
        if holder != message.id:
            return AsyncResult(holder, task_name=self.name)
        try:
            return self._apply_message(message)
        finally:
            unique.release(message)

    def _apply_message(self, message: TaskMessage) -> EagerResult[R]:
        return execution.run_eagerly(message)

    def AsyncResult(self, task_id: str) -> AsyncResult[R]:  # Celery spells it so
        """Return the result handle of one call of this task, by its id."""
        return AsyncResult(task_id, task_name=self.name)

    # -- signatures (see django_tq.canvas) ----------------------------------------------------
    def publisher(self, *, batch_size: int = DEFAULT_BATCH_SIZE) -> Publisher:
        """Return a publisher that sends calls in bursts: ``apply_async(..., publisher=p)``."""
        return Publisher(batch_size=batch_size)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """Return a signature of this task with these (partial) arguments."""
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """Return an immutable signature: a previous step's result is not passed to it."""
        return Signature(self, args, kwargs, immutable=True)

    def map(self, items: Any) -> Signature:
        """Return a signature of one task calling this one on each item."""
        return xmap(self.name, items)

    def starmap(self, items: Any) -> Signature:
        """Return a signature of one task calling this one with each item's arguments."""
        return xstarmap(self.name, items)

    def chunks(self, items: Any, size: int) -> group:
        """Return a group of tasks, each calling this one on ``size`` items' arguments."""
        return chunks(self.name, items, size)

    def replace(self, sig: Signature) -> NoReturn:
        """Replace the running task with ``sig``, which takes over its id, chain and callbacks."""
        if self.request.called_directly:
            raise RuntimeError(f"{self.name}.replace() was called outside a task execution.")
        raise Replace(sig.to_dict())

    # -- inside a running task ---------------------------------------------------------------
    @property
    def request(self) -> Request:
        """Return the request of this task's current execution (``called_directly`` outside one)."""
        request = current_request.get()
        if request is None or request.task != self.name:
            return DIRECT_CALL
        return request

    def is_aborted(self) -> bool:
        """Return whether this execution was revoked or terminated: poll it to stop a long loop.

        It reads the revocations at most every half second, so polling it in a loop is cheap.
        Once it returned True the execution ends ``REVOKED``, whatever the task returns next.
        Outside an execution it is False.
        """
        request = self.request
        if request.called_directly or request.id is None:
            return False
        return abort.is_aborted(request.id)

    def retry(
        self,
        exc: BaseException | None = None,
        *,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        max_retries: int | None = None,
        queue: str | None = None,
    ) -> NoReturn:
        """Schedule another attempt of the running task and raise :class:`Retry`.

        Raises ``exc`` (or :class:`MaxRetriesExceededError`) once ``max_retries`` is reached.
        """
        request = self.request
        if request.called_directly:
            raise RuntimeError(f"{self.name}.retry() was called outside a task execution.")
        limit = max_retries if max_retries is not None else self.resolved_max_retries()
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}]: max retries ({limit}) exceeded."
            )
        if eta is None:
            delay = countdown if countdown is not None else self.resolved_retry_delay()
            eta = timezone.now() + dt.timedelta(seconds=float(delay))
        retry = Retry(exc=exc, when=eta)
        retry.queue = queue
        raise retry

    def resolved_max_retries(self) -> int | None:
        """Return ``max_retries`` (None: no limit) from the task, else from settings."""
        if self.max_retries is FROM_SETTINGS:
            return tq_settings.MAX_RETRIES
        return self.max_retries

    def resolved_retry_delay(self) -> float:
        """Return ``default_retry_delay`` from the task, else from settings."""
        delay = self.default_retry_delay
        return float(delay if delay is not None else tq_settings.DEFAULT_RETRY_DELAY)

    def resolved_acks_late(self) -> bool:
        """Return ``acks_late`` from the task, else from settings."""
        return self.acks_late if self.acks_late is not None else bool(tq_settings.ACKS_LATE)

    def resolved_reject_on_worker_lost(self) -> bool:
        """Return ``reject_on_worker_lost`` from the task, else from settings."""
        value = self.reject_on_worker_lost
        return bool(tq_settings.REJECT_ON_WORKER_LOST if value is None else value)

    def update_state(self, state: str, meta: dict[str, Any] | None = None) -> None:
        """Record a custom state (e.g. ``PROGRESS``) with ``meta`` for the running task."""
        execution.update_state(self, state, meta)

    # -- handlers (override in a base class) -------------------------------------------------
    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Run before the task body."""

    def on_success(
        self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Run after the task succeeded."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: str,
    ) -> None:
        """Run after the task failed."""

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: str,
    ) -> None:
        """Run when the task is retried."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: str,
    ) -> None:
        """Run after the task returned, whatever its state."""


@overload
def task(func: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    bind: Literal[False] = False,
    base: type[Task[Any, Any]] | None = None,
    **options: Any,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


@overload
def task(
    *,
    name: str | None = None,
    bind: Literal[True],
    base: type[Task[Any, Any]] | None = None,
    **options: Any,
) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...


def task(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    bind: bool = False,
    base: type[Task[Any, Any]] | None = None,
    **options: Any,
) -> Task[Any, Any] | Callable[[Callable[..., Any]], Task[Any, Any]]:
    """Declare a task: ``@task`` or ``@task(name=…, queue=…, bind=True, …)``.

    A bound task's ``self`` is not part of its call signature: ``delay()`` takes the rest.
    """

    def decorate(function: Callable[..., Any]) -> Task[Any, Any]:
        cls = base or Task
        instance: Task[Any, Any] = cls(function, name=name, bind=bind, **options)
        registry.register(instance)
        return instance

    if func is not None:
        return decorate(func)
    return decorate


shared_task = task


def new_task_id() -> str:
    """Return a random task id: what ``str(uuid.uuid4())`` returns, in a third of its time."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


#: ``TASK_ROUTES`` as last read, and the route of each task name under it (``None``: an entry is
#: a callable router, whose answer depends on the arguments: asked at every call)
_routes_memo: tuple[Any, dict[str, routing.Route | None] | None] = (None, None)
#: (queue, exchange, routing key) of a task (or ``None`` three times: the default) -> where its
#: messages go under the current settings (what ``routing`` resolves from ``TQ["QUEUES"]``)
_destinations: dict[tuple[str | None, str | None, str | None], routing.Destination] = {}


def _route_of(name: str, args: Any, kwargs: Any) -> routing.Route | None:
    """Return ``TASK_ROUTES``' options for task ``name`` (remembered while they are the same;
    the dict returned is shared: read it, never change it)."""
    global _routes_memo
    routes = tq_settings.TASK_ROUTES
    cached, known = _routes_memo
    if cached is not routes:
        entries = routes if isinstance(routes, list | tuple) else [routes]
        known = {} if all(isinstance(entry, Mapping) for entry in entries) else None
        _routes_memo = (routes, known)
    if known is None:
        return routing.route(name, routes, args, kwargs)
    try:
        return known[name]
    except KeyError:
        found = known[name] = routing.route(name, routes, args, kwargs)
        return found


def _resolved(
    queue: str | None, exchange: str | None, routing_key: str | None
) -> routing.Destination | None:
    """Return where a task's own ``queue``/``exchange``/``routing_key`` send its messages, or
    ``None`` when it names none of them; resolved once per settings load."""
    if not (queue or exchange or routing_key):
        return None
    key = (queue, exchange, routing_key)
    found = _destinations.get(key)
    if found is None:
        found = routing.destination(
            {"queue": queue, "exchange": exchange, "routing_key": routing_key}
        )
        assert found is not None
        _destinations[key] = found
    return found


def _default_destination() -> routing.Destination:
    """Return ``routing.default_destination()``, resolved once per settings load."""
    found = _destinations.get(_DEFAULT)
    if found is None:
        found = _destinations[_DEFAULT] = routing.default_destination()
    return found


#: the key of the default destination in ``_destinations`` (no task names it: all three unset)
_DEFAULT: tuple[None, None, None] = (None, None, None)


@on_reload
def _forget_routes() -> None:
    global _routes_memo
    _routes_memo = (None, None)
    _destinations.clear()


def _workflow_fields(options: dict[str, Any]) -> dict[str, Any]:
    """Return the ``TaskMessage`` fields for the workflow options ``link``, ``link_error``, …"""
    fields: dict[str, Any] = {}
    if options.get("chain"):
        fields["chain"] = tuple(options["chain"])
    if options.get("chord"):
        fields["chord"] = str(options["chord"])
    for key in ("link", "link_error"):
        if options.get(key):
            fields[key] = tuple(links_of(options[key]))
    return fields


def send_task(
    name: str,
    args: tuple[Any, ...] | list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncResult[Any]:
    """Enqueue the task registered (on the worker) as ``name`` without importing its function."""
    return registry.sender(name).apply_async(args, kwargs, **options)


async def asend_task(
    name: str,
    args: tuple[Any, ...] | list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncResult[Any]:
    """Enqueue the task registered as ``name`` without blocking the event loop."""
    return await registry.sender(name).aapply_async(args, kwargs, **options)


def _stand_in(name: str) -> Task[..., Any]:
    """Return a task that can only be sent: the one registered as ``name`` on the workers."""
    return Task(lambda *a, **k: None, name=name)


registry.use_stand_in(_stand_in)
