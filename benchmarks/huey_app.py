"""The Huey side of the benchmark (Redis): the same task body on ``$BENCH_HUEY_URL``.

``RedisHuey`` at its defaults: results on (``results=True``), ``store_none=False`` — so a task
that returns ``None``, as this one does, writes no result — pickle, blocking ``BRPOP`` reads.
``BENCH_RESULTS=redis`` sets ``store_none=True``: every task then writes its (``None``) result to
Redis, as the other systems' results-in-Redis rows do. The consumer runs with
``-k process -w 2`` (two worker processes, each reading the queue itself).
"""

from __future__ import annotations

import os

from huey import RedisHuey

from benchmarks import namespace
from benchmarks.probe import record

huey = RedisHuey(
    namespace.queue("huey_bench"),
    url=os.environ.get(
        "BENCH_HUEY_URL", f"redis://127.0.0.1:{namespace.REDIS_PORT}/{namespace.REDIS_DB}"
    ),
    store_none=os.environ.get("BENCH_RESULTS") == "redis",
)


@huey.task(name="bench.noop")
def noop(phase: str = "d", sent: float = 0.0) -> None:
    record(phase, sent)
