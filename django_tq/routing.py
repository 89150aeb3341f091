"""``TQ["TASK_ROUTES"]``: which queue (and routing key/priority) a task name goes to."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

Route = dict[str, Any]

#: characters a queue name typed in the admin or given over the API may use
QUEUE_NAME = re.compile(r"^[\w.:@-]+$")


@lru_cache(maxsize=1024)
def _compile(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        return pattern
    return re.compile(fnmatch.translate(pattern))


def _normalise(value: Route | str | None) -> Route | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"queue": value}
    return dict(value)


def route(name: str, routes: Any, args: Any = (), kwargs: Any = None) -> Route | None:
    """Return the options of the first route matching task ``name``, or ``None``.

    ``routes`` is a dict ``{glob or re.Pattern: options or queue name}``, a callable
    ``router(name, args, kwargs) -> options | queue | None``, or a list of either; first match wins.
    """
    entries = routes if isinstance(routes, list | tuple) else [routes]
    for entry in entries:
        if callable(entry) and not isinstance(entry, Mapping):
            found = _normalise(entry(name, args, kwargs or {}))
            if found is not None:
                return found
            continue
        for pattern, options in entry.items():
            if _compile(pattern).fullmatch(name):
                return _normalise(options)
    return None
