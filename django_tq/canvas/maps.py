"""Signatures that run one task over many arguments: ``t.map``, ``t.starmap``, ``t.chunks``.

They name the built-in tasks ``django_tq.map`` and ``django_tq.starmap``, declared in
:mod:`django_tq.canvas.builtins` (above ``tasks.py``, which these sit below).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from django_tq.canvas.primitives import group
from django_tq.canvas.signatures import Signature


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
