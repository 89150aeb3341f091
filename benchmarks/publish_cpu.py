"""Client CPU per ``.delay()`` in one process: the publish path's own cost, load or not.

    BENCH_TQ_BROKER=redis://127.0.0.1:6391/15 python -m benchmarks.publish_cpu -n 3000 -r 5
    BENCH_TQ_BROKER=amqp://guest:guest@127.0.0.1:5672// BENCH_TQ_CONFIRM=batch \\
        python -m benchmarks.publish_cpu --bulk

Publishes one warm-up task, then ``-r`` rounds of ``-n`` no-op tasks (``noop.delay``, or through
one publisher with ``--bulk``), and prints per round the wall time and the process' CPU time
(``time.process_time``: this thread and the confirm collector's, not the broker's) per call,
then the medians. With the broker on the same cores the rate moves with the load; the CPU per
call moves much less, so A/B runs compare it. ``--no-network`` replaces the Redis transport's
socket round trip by a stub (what is left is django_tq's Python alone). The messages stay in the
queue (``tq_bench_<BENCH_RUN_ID>``): use a private ``redis-server`` and delete the RabbitMQ queue
afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.publish_cpu")
    parser.add_argument("-n", type=int, default=3000, help="calls per round")
    parser.add_argument("-r", "--rounds", type=int, default=5)
    parser.add_argument("--bulk", action="store_true", help="through one reusable publisher")
    parser.add_argument("--no-network", action="store_true", help="redis://: stub the socket")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()
    from benchmarks.tq_tasks import noop
    from django_tq.broker import get_broker

    broker = get_broker()

    def run(count: int) -> None:
        if args.bulk:
            publisher = noop.publisher()
            for i in range(count):
                noop.apply_async(("d", float(i)), publisher=publisher)
            publisher.flush()
        else:
            for i in range(count):
                noop.delay("d", float(i))
        broker.wait_for_confirms()

    run(1)
    if args.no_network:
        from django_tq.transport import redis as redis_transport

        def stub(connection: Any, commands: list[Any]) -> list[Any]:
            return [1] * len(commands)

        redis_transport.Channel._send = staticmethod(stub)  # type: ignore[method-assign]
    walls, cpus = [], []
    for _ in range(args.rounds):
        cpu, wall = time.process_time(), time.perf_counter()
        run(args.n)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        walls.append(wall / args.n * 1e6)
        cpus.append(cpu / args.n * 1e6)
        print(
            f"  wall {walls[-1]:7.1f} µs/call ({args.n / wall:,.0f}/s)  CPU {cpus[-1]:6.1f} µs/call"
        )
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    mode = "bulk" if args.bulk else "one by one"
    print(
        f"{broker.scheme} {mode}: median wall {wall:.1f} µs/call ({1e6 / wall:,.0f}/s), CPU {cpu:.1f} µs/call"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
