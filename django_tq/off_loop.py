"""Calls that touch the database, made from code that runs an event loop.

Django refuses synchronous queries in a thread that runs an event loop (an ``async def`` view,
an ``async def`` task) with ``SynchronousOnlyOperation``. Two doors:

* :func:`call_off_loop` — a synchronous call (``t.delay()`` in an ``async def`` view) runs in a
  helper thread of this process while the caller waits: the loop is blocked for the time of the
  call (an enqueue: one result-row write and one publish, a few milliseconds).
* :func:`to_thread_sensitive` — a coroutine (``await t.adelay()``) runs the call through asgiref's
  ``sync_to_async(thread_sensitive=True)``, as Django's own ``a*`` methods do: the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")

HELPER_THREADS = 4  #: the helper threads of one process (each with its database connection)

_executor: tuple[int, ThreadPoolExecutor] | None = None


def in_event_loop() -> bool:
    """Return whether this thread runs an event loop where Django refuses synchronous queries.

    Not with ``DJANGO_ALLOW_ASYNC_UNSAFE`` set: Django then runs them here, maybe inside an
    ``atomic()`` block whose commit a publish must follow.
    """
    # the loop first: every .delay() asks, and outside a loop the environment need not be read
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return not os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")


def _helpers() -> ThreadPoolExecutor:
    """Return this process's executor for synchronous calls made from an event loop."""
    global _executor
    if _executor is None or _executor[0] != os.getpid():
        executor = ThreadPoolExecutor(HELPER_THREADS, thread_name_prefix="django_tq-off-loop")
        _executor = (os.getpid(), executor)
    return _executor[1]


def _in_helper(call: Callable[[], R]) -> R:
    """Run ``call`` with the helper thread's own connection, as Django runs a request: closed
    before and after unless ``CONN_MAX_AGE`` keeps it (never inside a transaction)."""
    close_old_connections()
    try:
        return call()
    finally:
        close_old_connections()


def call_off_loop(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call ``func`` here, or in a helper thread (waiting for it) when this thread runs a loop.

    The helper sees the caller's context variables (the running task's request). Its database
    connection is its own: code in an event loop holds no transaction (``atomic()`` is
    synchronous), so a publish from there never waits for a commit.
    """
    if not in_event_loop():
        return func(*args, **kwargs)
    context = contextvars.copy_context()
    call = functools.partial(func, *args, **kwargs)
    return _helpers().submit(context.run, _in_helper, call).result()


async def to_thread_sensitive(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Await ``func`` run by ``sync_to_async(thread_sensitive=True)`` (Django's own choice)."""
    return await sync_to_async(func, thread_sensitive=True)(*args, **kwargs)
