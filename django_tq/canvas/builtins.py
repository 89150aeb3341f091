"""Built-in tasks that run another task over many arguments: ``t.map``, ``t.starmap``, ``t.chunks``."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from django_tq.canvas.primitives import group
from django_tq.canvas.signatures import Signature
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


def xmap(name: str, items: Iterable[Any]) -> Signature:
    """Return the signature of one task running task ``name`` on each item (``t.map(items)``)."""
    return Signature("django_tq.map", (name, list(items)))


def xstarmap(name: str, items: Iterable[Iterable[Any]]) -> Signature:
    """Return the signature of one task running ``name(*item)`` for each item (``t.starmap``)."""
    return Signature("django_tq.starmap", (name, [list(item) for item in items]))


def chunks(name: str, items: Iterable[Iterable[Any]], size: int) -> group:
    """Return a group of ``starmap`` tasks, each over ``size`` items (``t.chunks(items, n)``)."""
    if size < 1:
        raise ValueError("chunks() needs a chunk size of at least 1")
    iterator = iter(items)
    parts = iter(lambda: list(itertools.islice(iterator, size)), [])
    return group(*(xstarmap(name, part) for part in parts))
