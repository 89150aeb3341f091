"""Pools that change size (pool_grow/pool_shrink, --autoscale) and the autoscaler's decisions."""

from __future__ import annotations

import pytest

from django_tq.models import WorkerState
from django_tq.worker.autoscale import Autoscaler
from django_tq.worker.pool import Pool, SoloPool, ThreadPool
from tests.conftest import child_pids, wait_for
from tests.testapp.tasks import slow_record


def _consumer(index, stop_event, slot) -> None:
    while not stop_event.wait(0.01):
        pass


def _alive(pool: ThreadPool) -> list[int]:
    return [i for i, thread in enumerate(pool.threads) if thread is not None and thread.is_alive()]


def test_a_thread_pool_grows_at_once_and_shrinks_warm_without_replacing():
    pool = ThreadPool(_consumer, 2)
    pool.start()
    try:
        pool.resize(4)
        assert _alive(pool) == [0, 1, 2, 3]
        pool.resize(1)
        wait_for(lambda: _alive(pool) == [0], 5)
        exits = pool.tick()
        assert sorted(e.index for e in exits) == [1, 2, 3]
        assert pool.tick() == [] and _alive(pool) == [0]  # not replaced
        pool.resize(3)
        assert _alive(pool) == [0, 1, 2]
    finally:
        pool.stop()
        pool.join(5)


def test_a_pool_needs_one_consumer_and_solo_cannot_resize():
    with pytest.raises(ValueError, match="at least one"):
        ThreadPool(_consumer, 1).resize(0)
    with pytest.raises(ValueError, match="solo pool runs one consumer"):
        SoloPool(_consumer).resize(2)


class FakePool(Pool):
    def __init__(self, size: int) -> None:
        super().__init__(_consumer, size)
        self.busy = 0
        self.sizes: list[int] = []

    def running_tasks(self) -> list[str]:
        return [f"t{i}" for i in range(self.busy)]

    def resize(self, concurrency: int) -> None:
        self.sizes.append(concurrency)
        self.concurrency = concurrency


def test_the_autoscaler_grows_with_the_backlog_and_shrinks_after_keepalive():
    pool, depth = FakePool(1), [0]
    scaler = Autoscaler(pool, maximum=5, minimum=1, backlog=lambda: depth[0], keepalive=10)
    pool.busy, depth[0] = 1, 1  # one running, nothing else waits
    assert scaler.tick(0) is None
    depth[0] = 3  # two more wait
    assert scaler.tick(1) == 3
    pool.busy, depth[0] = 3, 20
    assert scaler.tick(2) == 5  # capped at the maximum
    pool.busy = 5
    assert scaler.tick(3) is None  # all busy at the maximum
    pool.busy, depth[0] = 2, 3
    assert scaler.tick(4) is None  # idle, but not for keepalive yet
    assert scaler.tick(14) is None  # idle for 10 s, but a message waits
    depth[0] = 2
    assert scaler.tick(15) == 2  # idle for 10 s, nothing waits: down to the busy ones
    pool.busy, depth[0] = 0, 0
    assert scaler.tick(16) is None
    assert scaler.tick(26) == 1  # never below the minimum
    assert pool.sizes == [3, 5, 2, 1]


def test_the_autoscaler_waits_for_its_interval_and_an_unknown_depth_grows_nothing():
    pool = FakePool(1)
    pool.busy = 1
    scaler = Autoscaler(pool, maximum=3, minimum=1, backlog=lambda: None, interval=1.0)
    assert scaler.tick(0) is None
    assert scaler.tick(0.5) is None
    with pytest.raises(ValueError, match="1 <= MIN <= MAX"):
        Autoscaler(pool, maximum=2, minimum=3, backlog=lambda: 0)


@pytest.mark.django_db(transaction=True)
def test_autoscale_adds_children_for_a_backlog_and_lets_them_go_when_idle(
    start_worker, settings, queue_name
):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name, "WORKER_AUTOSCALE_KEEPALIVE": 1}
    worker = start_worker(
        "-P",
        "prefork",
        "--autoscale",
        "3,1",
        "--prefetch-multiplier",
        "1",
    )
    assert len(child_pids(worker.pid)) == 1
    results = [slow_record.delay(1.5, f"s{i}") for i in range(6)]
    wait_for(lambda: len(child_pids(worker.pid)) == 3, 20, what="three children")
    assert [r.get(timeout=60) for r in results] == [f"s{i}" for i in range(6)]
    assert "Autoscale: 1 -> 3 consumers" in worker.output()
    wait_for(lambda: len(child_pids(worker.pid)) == 1, 20, what="back to one child")
    wait_for(lambda: WorkerState.objects.filter(concurrency=1).exists(), 20, what="heartbeat")
    assert "stopped: the pool shrank" in worker.output()
    assert slow_record.delay(0, "after").get(timeout=20) == "after"


def test_autoscale_is_refused_for_the_solo_pool():
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="prefork or threads"):
        call_command("tqworker", "-P", "solo", "--autoscale", "2,1")
    with pytest.raises(CommandError, match="MIN <= MAX"):
        call_command("tqworker", "--autoscale", "1,2")
