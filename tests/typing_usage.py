"""Checked by mypy in scripts/test (not a pytest module): the public API's types hold."""

from __future__ import annotations

from typing import Any, assert_type

from django_tq import AsyncResult, asend_task, task


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
assert_type(add.AsyncResult("an-id"), AsyncResult[int])


async def async_call_sites() -> None:
    assert_type(await add.adelay(1, 2), AsyncResult[int])
    assert_type(await add.aapply_async((1, 2), countdown=1), AsyncResult[int])
    assert_type(await bound.adelay("https://example.invalid"), AsyncResult[bytes])
    assert_type(await add.delay(1, 2).aget(timeout=1), int)
    assert_type(await add.delay(1, 2).astate(), str)
    assert_type(await asend_task("somewhere.else", (1,)), AsyncResult[Any])
