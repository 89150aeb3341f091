"""The worker's per-message CPU in one process: µs per task from delivery to ack.

    TQ_TEST_DB=postgres TQ_TEST_DB_NAME=<db> TQ_SETTINGS_JSON='{"BROKER_URL": "redis://…"}' \\
        .venv/bin/python -m benchmarks.consumer_cpu -n 2000 --rounds 3 [--profile 30] [--migrate]

Runs with ``tests.settings`` (connections kept across tasks with health checks, as in a
worker). Each round enqueues ``n`` no-op tasks (``add.delay``, not timed), then drains them in
this thread with the worker's own :class:`~django_tq.worker.consumer.Consumer` (prefetch
``--prefetch``) and prints process CPU µs and wall µs per task, with results at the defaults
(``django-db``) or ``--results none``. ``--profile N`` runs the last round under cProfile and
prints the N functions with the most own time. Compare CPU per task across runs (A/B,
interleaved); wall time moves with the load.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

from benchmarks.in_process import setup_django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=8)
    parser.add_argument("--results", choices=["django-db", "none"], default="django-db")
    parser.add_argument("--profile", type=int, default=0)
    parser.add_argument("--migrate", action="store_true")
    args = parser.parse_args()

    setup_django(migrate=args.migrate)
    from django.conf import settings
    from django.db import connection

    import django_tq
    from django_tq.broker import get_broker
    from django_tq.conf import tq_settings
    from django_tq.worker.consumer import ConsumerConfig
    from django_tq.worker.embedded import _UntilEmpty
    from tests.testapp.tasks import add

    settings.TQ = {**settings.TQ, "RESULT_BACKEND": None if args.results == "none" else "django-db"}
    tq_settings.reload()
    broker = get_broker()
    queue = tq_settings.DEFAULT_QUEUE
    broker.purge([queue])
    config = ConsumerConfig(
        queues=(queue,), prefetch=args.prefetch, hostname="consumer-cpu@bench", drain_timeout=0.05
    )
    print(
        f"# django_tq from {os.path.dirname(django_tq.__file__)}, {connection.vendor}, "
        f"broker {settings.TQ.get('BROKER_URL')}, results {args.results}, "
        f"prefetch {args.prefetch}, n {args.n}"
    )
    cpu, wall = [], []
    for round_ in range(args.rounds):
        for i in range(args.n):
            add.delay(i, 1)
        consumer = _UntilEmpty(broker, config, limit=args.n + 1)
        profiler = cProfile.Profile() if args.profile and round_ == args.rounds - 1 else None
        w0, c0 = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        consumer.run()
        if profiler is not None:
            profiler.disable()
        w1, c1 = time.perf_counter(), time.process_time()
        assert consumer.processed == args.n, consumer.processed
        if profiler is None:
            cpu.append((c1 - c0) / args.n * 1e6)
            wall.append((w1 - w0) / args.n * 1e6)
        else:
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(args.profile)
            stats.sort_stats("cumtime").print_stats(args.profile)
    print(
        "cpu µs/task "
        + " ".join(f"{c:.0f}" for c in cpu)
        + " | wall µs/task "
        + " ".join(f"{w:.0f}" for w in wall)
    )


if __name__ == "__main__":
    main()
