"""Calling tasks from async code: ``adelay``/``aapply_async``/``asend_task``, ``aget``/``astate``,
``group(...).aapply_async()``, and a plain ``.delay()`` in an ``async def`` view (ASGI, Django's
``AsyncClient``)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.test import AsyncClient

import django_tq
from django_tq import AsyncResult, group, states
from django_tq.enqueue import is_waiting_for_commit
from django_tq.exceptions import TimeoutError
from django_tq.models import TaskResult
from django_tq.testing import CapturedQueue
from django_tq.worker.embedded import EmbeddedWorker
from tests.testapp.models import Execution
from tests.testapp.tasks import add, record

pytestmark = pytest.mark.django_version  # async views, asgiref: what Django versions change


def _get(path: str) -> Any:
    return async_to_sync(AsyncClient().get)(path)


# -- under an ASGI request cycle ----------------------------------------------------------------
@pytest.mark.parametrize("how", ["delay", "adelay"])
def test_an_async_view_enqueues_and_a_worker_runs_it(how: str, tq_worker: EmbeddedWorker) -> None:
    response = _get(f"/enqueue-async/?how={how}&number=7")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["state"] in {states.QUEUED, states.STARTED, states.SUCCESS}
    assert TaskResult.objects.filter(task_id=body["task_id"], task_name=record.name).exists()
    assert AsyncResult(body["task_id"]).get(timeout=10) == f"{how}:7"
    assert Execution.objects.get(task_id=body["task_id"]).label == f"{how}:7"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["delay", "adelay"])
def test_an_async_view_enqueues_under_capture(how: str, tq_capture: CapturedQueue) -> None:
    response = _get(f"/enqueue-async/?how={how}&number=3")
    assert response.status_code == 201, response.content
    (message,) = tq_capture.assert_enqueued(record, args=(f"{how}:3",))
    assert message.id == response.json()["task_id"]
    assert response.json()["state"] == states.QUEUED
    tq_capture.run_all()
    assert Execution.objects.get(task_id=message.id).label == f"{how}:3"


# -- each coroutine ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_adelay_and_aapply_async_enqueue_with_options(tq_capture: CapturedQueue) -> None:
    async def call() -> tuple[AsyncResult[int], AsyncResult[int]]:
        first = await add.adelay(1, 2)
        second = await add.aapply_async((3, 4), queue="other", priority=7)
        return first, second

    first, second = async_to_sync(call)()
    tq_capture.assert_enqueued(add, args=(1, 2), count=1)
    (message,) = tq_capture.assert_enqueued(add, args=(3, 4))
    assert (message.queue, message.priority, message.id) == ("other", 7, second.id)
    assert TaskResult.objects.get(task_id=first.id).state == states.QUEUED


@pytest.mark.django_db
def test_asend_task_sends_by_name(tq_capture: CapturedQueue) -> None:
    result = async_to_sync(django_tq.asend_task)("somewhere.else.only_on_workers", (1,))
    (message,) = tq_capture.assert_enqueued("somewhere.else.only_on_workers", args=(1,))
    assert message.id == result.id


@pytest.mark.django_db
def test_group_aapply_async_sends_every_member(tq_capture: CapturedQueue) -> None:
    async def call() -> Any:
        return await group(add.s(1, 1), add.s(2, 2)).aapply_async()

    handle = async_to_sync(call)()
    assert len(tq_capture.assert_enqueued(add, count=2)) == 2
    assert {m.group_id for m in tq_capture.messages} == {handle.id}
    tq_capture.run_all()
    assert async_to_sync(handle.results[1].aget)(timeout=5) == 4
    assert async_to_sync(handle.ajoin)(timeout=5) == [2, 4]


def test_aget_of_an_eager_result() -> None:
    result = add.apply((1, 2))
    assert async_to_sync(result.aget)() == 3
    assert async_to_sync(result.astate)() == states.SUCCESS


@pytest.mark.django_db
def test_aget_and_astate(tq_capture: CapturedQueue) -> None:
    result = add.delay(2, 3)
    assert async_to_sync(result.astate)() == states.QUEUED
    with pytest.raises(TimeoutError):
        async_to_sync(result.aget)(timeout=0.05)
    tq_capture.run_all()
    assert async_to_sync(result.aget)(timeout=5) == 5
    assert async_to_sync(AsyncResult("no-such-id").astate)() == states.PENDING


@pytest.mark.django_db
def test_aget_does_not_block_the_loop(tq_capture: CapturedQueue) -> None:
    result = add.delay(2, 3)
    ticks: list[int] = []

    async def tick() -> None:
        for n in range(5):
            ticks.append(n)
            await asyncio.sleep(0.01)

    async def wait() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.gather(result.aget(timeout=0.2, interval=0.02), tick())

    async_to_sync(wait)()
    assert ticks == [0, 1, 2, 3, 4]


@pytest.mark.django_db(transaction=True)
def test_delay_in_an_event_loop_runs_in_a_helper_thread(tq_capture: CapturedQueue) -> None:
    threads: list[str] = []

    async def call() -> AsyncResult[int]:
        threads.append(threading.current_thread().name)
        return add.delay(5, 5)  # a sync call in a running loop: no SynchronousOnlyOperation

    result = asyncio.run(call())
    tq_capture.assert_enqueued(add, args=(5, 5), count=1)
    assert TaskResult.objects.get(task_id=result.id).state == states.QUEUED
    assert threads == [threading.current_thread().name]


@pytest.mark.db  # a transaction's on_commit
@pytest.mark.django_db(transaction=True)
def test_delay_in_an_event_loop_stays_in_the_thread_when_django_allows_it(
    monkeypatch: pytest.MonkeyPatch, tq_capture: CapturedQueue
) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    async def call() -> None:
        with transaction.atomic():  # Django allows it here: the publish waits for the commit
            result = add.delay(6, 6)
            assert is_waiting_for_commit(result.id)  # on this thread's connection

    asyncio.run(call())
    tq_capture.assert_enqueued(add, args=(6, 6), count=1)
