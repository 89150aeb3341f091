"""The client side of one benchmarked system, run as its own process by the orchestrator.

``python -m benchmarks.driver SYSTEM ACTION [options]`` prints one JSON object on stdout:

* ``setup`` — create the system's tables (Django ``migrate`` / Procrastinate's schema);
* ``enqueue --n N`` — publish one warm-up task, then N no-op tasks from this one process, timed;
  ``--bulk`` (django_tq only): through one reusable publisher (``noop.publisher()``), whose
  bursts are flushed inside the timing;
* ``latency --n 300 --interval 0.01`` — publish N tasks paced ``interval`` apart, each carrying
  its ``time.time()`` at publish so the task body can record the enqueue→start latency.

SYSTEM is a name from ``benchmarks.systems.SYSTEMS`` (``tq``, ``celery``, ``huey``, ``dramatiq``,
``procrastinate``, ``raw-redis-py``, ``raw-kombu``, ``raw-pg``). A process per system keeps each
system's state (Django, Celery's app, brokers' connection pools) out of the others' measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def tq_client() -> Iterator[Callable[[str, float], Any]]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()
    from benchmarks.tq_tasks import noop
    from django_tq.broker import get_broker

    def send(phase: str, sent: float) -> Any:
        return noop.delay(phase, sent)

    # BROKER_CONFIRM="batch": the timing ends once every confirm is in, not when the last
    # frame is written (a no-op when each publish waits for its own)
    send.flush = get_broker().wait_for_confirms  # type: ignore[attr-defined]
    yield send


@contextlib.contextmanager
def celery_client() -> Iterator[Callable[[str, float], Any]]:
    from benchmarks.celery_app import noop

    yield noop.delay


@contextlib.contextmanager
def procrastinate_client() -> Iterator[Callable[[str, float], Any]]:
    from benchmarks.procrastinate_app import app, noop

    with app.open():
        yield lambda phase, sent: noop.defer(phase=phase, sent=sent)


@contextlib.contextmanager
def huey_client() -> Iterator[Callable[[str, float], Any]]:
    from benchmarks.huey_app import noop

    yield noop  # calling a Huey task enqueues it


@contextlib.contextmanager
def dramatiq_client() -> Iterator[Callable[[str, float], Any]]:
    from benchmarks.dramatiq_app import broker, noop

    try:
        yield noop.send
    finally:
        broker.close()


def raw_client(kind: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    def client() -> contextlib.AbstractContextManager[Any]:
        from benchmarks import raw

        return raw.client(kind)

    return client


class TqBulkSender:
    """Send django_tq tasks through one reusable publisher; ``flush`` sends what waits."""

    def __init__(self) -> None:
        from benchmarks.tq_tasks import noop

        self.task = noop
        self.publisher = noop.publisher()

    def __call__(self, phase: str, sent: float) -> Any:
        return self.task.apply_async((phase, sent), publisher=self.publisher)

    def flush(self) -> None:
        self.publisher.flush()


@contextlib.contextmanager
def tq_bulk_client() -> Iterator[Callable[[str, float], Any]]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()
    yield TqBulkSender()


CLIENTS: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "tq": tq_client,
    "celery": celery_client,
    "huey": huey_client,
    "dramatiq": dramatiq_client,
    "procrastinate": procrastinate_client,
    "raw-redis-py": raw_client("redis-py"),
    "raw-kombu": raw_client("kombu"),
    "raw-pg": raw_client("pg"),
}


def setup(system: str) -> dict[str, Any]:
    started = time.perf_counter()
    if system in ("tq", "celery"):
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, interactive=False)
    elif system == "procrastinate":
        from benchmarks.procrastinate_app import app

        with app.open():
            app.schema_manager.apply_schema()
    elif system == "raw-pg":
        from benchmarks.raw import pg_setup

        pg_setup()
    return {"seconds": time.perf_counter() - started}


def enqueue(system: str, n: int, *, bulk: bool = False) -> dict[str, Any]:
    client = tq_bulk_client if bulk else CLIENTS[system]
    with client() as send:
        flush = getattr(send, "flush", lambda: None)
        send("w", 0.0)  # opens connections, declares queues: not part of the timing
        flush()
        started = time.perf_counter()
        for i in range(n):
            send("d", float(i))  # the index: the orchestrator detects losses and duplicates
        flush()
        seconds = time.perf_counter() - started
    return {"n": n, "seconds": seconds, "rate": n / seconds if seconds else None}


def latency(system: str, n: int, interval: float) -> dict[str, Any]:
    with CLIENTS[system]() as send:
        send("w", 0.0)
        time.sleep(0.2)
        started = time.perf_counter()
        late = 0
        for i in range(n):
            delay = started + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                late += 1
            send("l", time.time())
    return {"n": n, "interval": interval, "late_sends": late}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.driver")
    parser.add_argument("system", choices=sorted(CLIENTS))
    parser.add_argument("action", choices=["setup", "enqueue", "latency"])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--bulk", action="store_true", help="django_tq: one reusable publisher")
    parser.add_argument("--profile", help="write a cProfile of the action to this file")
    args = parser.parse_args(argv)
    if args.action == "setup":
        action: Callable[[], dict[str, Any]] = lambda: setup(args.system)  # noqa: E731
    elif args.action == "enqueue":
        action = lambda: enqueue(args.system, args.n, bulk=args.bulk)  # noqa: E731
    else:
        action = lambda: latency(args.system, args.n, args.interval)  # noqa: E731
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(action)
        profiler.dump_stats(args.profile)
    else:
        result = action()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
