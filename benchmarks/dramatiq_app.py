"""The Dramatiq side of the benchmark: the same task body on ``$BENCH_DRAMATIQ_URL``.

Redis (``redis://``): ``RedisBroker`` at its defaults. RabbitMQ (``amqp://``): ``RabbitmqBroker``
at its defaults — which in Dramatiq 2.2 means ``confirm_delivery=False``: ``send()`` returns
once the frame is written, without waiting for RabbitMQ's publisher confirm. ``BENCH_CONFIRM=1``
turns confirms on (like for like with django_tq, which confirms every publish by default).
Queues are durable and messages persistent either way.

``BENCH_RESULTS=redis`` adds the ``Results`` middleware with its ``RedisBackend`` on the broker's
Redis and ``store_results=True`` on the actor. The worker runs with ``--processes 2`` and
Dramatiq's default 8 threads per process.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq

from benchmarks import namespace
from benchmarks.probe import record

URL = os.environ.get(
    "BENCH_DRAMATIQ_URL", f"redis://127.0.0.1:{namespace.REDIS_PORT}/{namespace.REDIS_DB}"
)
RESULTS = os.environ.get("BENCH_RESULTS") == "redis"

broker: dramatiq.Broker
if URL.startswith("amqp"):
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=URL, confirm_delivery=os.environ.get("BENCH_CONFIRM") == "1")
else:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=URL)

options: dict[str, Any] = {}
if RESULTS:
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    broker.add_middleware(Results(backend=RedisBackend(url=URL)))
    options["store_results"] = True

dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench.noop", queue_name=namespace.queue("dramatiq_bench"), **options)
def noop(phase: str = "d", sent: float = 0.0) -> None:
    record(phase, sent)
