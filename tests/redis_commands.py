"""A redis-py client that counts the commands it sends (the ``results`` cache of the tests).

``tests/settings.py`` makes it the client of the django-redis ``results`` cache, so a test can
assert how many reads and writes a result backend costs: ``counting()`` yields a
``collections.Counter`` of command names sent meanwhile by this process.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

_counters: list[Counter[str]] = []
_lock = threading.Lock()


class CountingRedis(redis.Redis):
    """``redis.Redis`` that adds each command's name to every open :func:`counting` counter."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        with _lock:
            for counter in _counters:
                counter[str(args[0]).upper()] += 1
        return super().execute_command(*args, **options)


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """Count the Redis commands this process sends through :class:`CountingRedis` meanwhile."""
    counter: Counter[str] = Counter()
    with _lock:
        _counters.append(counter)
    try:
        yield counter
    finally:
        with _lock:
            _counters.remove(counter)
