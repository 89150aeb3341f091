"""Checked by mypy in scripts/test (not a pytest module): the public API's types hold."""

from __future__ import annotations

from typing import Any, assert_type

from django_tq import AsyncResult, task


@task
def add(x: int, y: int) -> int:
    return x + y


@task(bind=True, queue="io")
def bound(self: Any, url: str) -> bytes:
    return url.encode()


assert_type(add.delay(1, 2), AsyncResult[int])
assert_type(add(1, 2), int)
assert_type(bound.delay("https://example.invalid"), AsyncResult[bytes])
assert_type(add.delay(1, 2).get(timeout=1), int)
