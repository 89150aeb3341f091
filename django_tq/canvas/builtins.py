"""Built-in tasks that run another task over many arguments (``t.map``, ``t.starmap``,
``t.chunks``: see :mod:`django_tq.canvas.maps`), and the body ``replace()`` gives a group.

Declared with ``@task``, this module sits above ``tasks.py``; ``apps.ready`` imports it.
"""

from __future__ import annotations

from typing import Any

from django_tq.registry import registry
from django_tq.tasks import task


@task(name="django_tq.map")
def _map(task_name: str, items: list[Any]) -> list[Any]:
    """Run ``task_name`` inline on each item; return the results in order."""
    run = registry.get(task_name)
    return [run(item) for item in items]


@task(name="django_tq.starmap")
def _starmap(task_name: str, items: list[list[Any]]) -> list[Any]:
    """Run ``task_name`` inline on each item's arguments; return the results in order."""
    run = registry.get(task_name)
    return [run(*item) for item in items]


@task(name="django_tq.accumulate")
def _accumulate(results: list[Any]) -> list[Any]:
    """Return a group's results (the body ``replace()`` gives a group)."""
    return results
