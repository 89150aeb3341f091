"""CPU and Redis commands per call of the ``django-cache`` result backend on django-redis.

    .venv-bench/bin/python -m benchmarks.cache_results [-n 5000] [--rounds 3] [--profile]

Runs the backend's three per-task writes in this process against Redis on 127.0.0.1:6379
(``--url``): ``mark_queued`` (enqueue), ``mark_started`` and ``store(SUCCESS)`` (the worker), N
tasks each, and prints per call the CPU µs of this process (``time.process_time``), the wall µs
and the Redis commands sent (counted on the client). No worker, no broker: what is measured is
the backend alone, so an A/B of two checkouts (``PYTHONPATH`` picks the ``django_tq`` imported)
is not blurred by the rest of the worker (run it from each checkout: the ``django_tq`` imported is
the current directory's). Keys carry a prefix of their own and are deleted after.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import threading
import time
import uuid
from collections import Counter
from typing import Any

import django
import redis
from django.conf import settings

_counts: Counter[str] = Counter()
_lock = threading.Lock()


class CountingRedis(redis.Redis):
    """``redis.Redis`` that counts the commands it sends (the backend's cache client)."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        with _lock:
            _counts[str(args[0]).upper()] += 1
        return super().execute_command(*args, **options)


def _configure(url: str, prefix: str) -> None:
    settings.configure(
        SECRET_KEY="django_tq-benchmark-not-secret",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_tq"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": prefix,
                "OPTIONS": {"REDIS_CLIENT_CLASS": "__main__.CountingRedis"},
            }
        },
        TQ={"RESULT_BACKEND": "django-cache"},
    )
    django.setup()


def _round(n: int) -> dict[str, tuple[float, float, float]]:
    from django_tq import states
    from django_tq.message import TaskMessage
    from django_tq.result_backends import get_backend

    backend = get_backend()
    messages = [
        TaskMessage(
            id=uuid.uuid4().hex,
            task="benchmarks.tq_tasks.noop",
            args=(1, 2),
            kwargs={"x": "y"},
            queue="tq_bench",
        )
        for _ in range(n)
    ]
    calls = {
        "mark_queued": lambda m: backend.mark_queued(m),
        "mark_started": lambda m: backend.mark_started(m, worker="bench-1", delivery_count=1),
        "store SUCCESS": lambda m: backend.store(m, states.SUCCESS, result=3, worker="bench-1"),
    }
    figures = {}
    for name, call in calls.items():
        _counts.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        for message in messages:
            call(message)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        figures[name] = (cpu / n * 1e6, wall / n * 1e6, sum(_counts.values()) / n)
    done = backend.get(messages[-1].id)
    assert done is not None and done.state == states.SUCCESS and done.date_started is not None
    for message in messages:
        backend.forget(message.id)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--profile", action="store_true", help="cProfile one round instead")
    args = parser.parse_args()
    _configure(args.url, f"tq-bench-cache-results-{os.getpid()}")
    import django_tq

    if args.profile:
        _round(100)  # the script loaded, the connection made
        profile = cProfile.Profile()
        profile.runcall(_round, args.n)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return

    rounds = [_round(args.n) for _ in range(args.rounds)]
    print(f"django_tq from {os.path.dirname(django_tq.__file__)}; N={args.n}, {args.rounds} rounds")
    print("| call | CPU µs/call (median) | wall µs/call (median) | Redis commands/call |")
    print("|---|---|---|---|")
    for name in rounds[0]:
        cpu = statistics.median(r[name][0] for r in rounds)
        wall = statistics.median(r[name][1] for r in rounds)
        print(f"| {name} | {cpu:.1f} | {wall:.1f} | {rounds[0][name][2]:g} |")
    total = [sum(r[name][0] for name in r) for r in rounds]
    print(f"| per task (sum) | {statistics.median(total):.1f} | | |")


if __name__ == "__main__":
    main()
