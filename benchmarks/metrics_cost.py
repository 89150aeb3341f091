"""What the Prometheus metrics cost one task, in CPU time and in instructions (load-independent).

    .venv/bin/python -m benchmarks.metrics_cost [-n 20000] [--rounds 7]
    .venv/bin/python -m benchmarks.metrics_cost --callgrind [-n 2000]

A worker child's per-task path as far as the metrics touch it: ``task_received`` sent (the
consumer), then ``execution.execute`` (``task_started``, ``task_prerun``, the task, its handlers,
``task_postrun``) of a no-op task, then (metrics on) the tally's ``observe`` as the consumer
calls it, in prometheus_client's multiprocess mode (values in a memory-mapped file, as in a
prefork child; the tally's flusher thread writes them, and its CPU time is counted too). The
metrics are connected and disconnected between blocks of tasks, on and off in turn
(``--rounds`` each), and the CPU time of each block (``time.process_time``) is compared: median
µs per task off, on, and the difference.

``--callgrind`` counts instructions instead, under ``valgrind --tool=callgrind``: four runs (off
and on, each with N/5 and N tasks), so start-up cancels out of ``(on_N - on_N/5) - (off_N -
off_N/5)``, divided by the 4N/5 tasks between them. Needs valgrind (Debian package ``valgrind``).
No database, no broker: results are off (``RESULT_BACKEND=None``) and nothing is recorded.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def setup_django() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    os.environ.setdefault("BENCH_DB", "sqlite")
    os.environ.setdefault("BENCH_SQLITE_PATH", os.path.join(tempfile.gettempdir(), "tq-cost.db"))
    os.environ["BENCH_RESULTS"] = "0"
    import django

    django.setup()


def make_runner() -> Any:
    """Return ``run(n, tally)``: the per-task path, ``n`` times (observed by ``tally`` if any)."""
    import datetime as dt

    from django_tq import signals, task
    from django_tq.execution import execute
    from django_tq.message import TaskMessage

    @task(name="bench.metrics_cost.noop", ignore_result=True)
    def noop() -> None:
        return None

    message = TaskMessage(
        id="cost-0", task=noop.name, queue="bench", sent_at=dt.datetime.now(dt.UTC)
    )

    def run(n: int, tally: Any = None) -> None:
        for _ in range(n):
            signals.send(signals.task_received, sender=noop, message=message)
            started_at = time.time()
            outcome = execute(message, hostname="cost@bench")
            if tally is not None:  # what Consumer.handle does after ``record``
                tally.observe(message, outcome, started_at)

    return run


def cpu_per_task(n: int, rounds: int) -> dict[str, float]:
    """Return the median µs of CPU per task with the metrics off and on (interleaved blocks)."""
    from django_tq.metrics import multiprocess
    from django_tq.metrics import tasks as task_metrics

    directory = multiprocess.prepare()
    run = make_runner()
    run(min(n, 2000))  # warm: imports, caches, the labelled children
    run(min(n, 2000), task_metrics.connect())
    task_metrics.disconnect()
    timings: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for _ in range(rounds):
            for mode in ("off", "on"):
                tally = task_metrics.connect() if mode == "on" else None
                started = time.process_time()
                run(n, tally)
                task_metrics.disconnect()  # on: the last flush
                timings[mode].append((time.process_time() - started) / n * 1e6)
    finally:
        directory.remove()
    off, on = statistics.median(timings["off"]), statistics.median(timings["on"])
    return {"off_us": off, "on_us": on, "cost_us": on - off}


def run_one(mode: str, n: int) -> None:
    """The body of one callgrind run: ``n`` tasks with the metrics ``mode`` (on/off)."""
    from django_tq.metrics import multiprocess
    from django_tq.metrics import tasks as task_metrics

    directory = multiprocess.prepare()
    tally = task_metrics.connect() if mode == "on" else None
    run = make_runner()
    run(20, tally)  # the same warm-up in every run: it cancels out
    run(n, tally)
    task_metrics.disconnect()
    directory.remove()


def instructions(mode: str, n: int) -> int:
    """Run ``run_one`` under callgrind; return the instructions it executed."""
    with tempfile.TemporaryDirectory(prefix="tq-callgrind-") as scratch:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={scratch}/callgrind.out",
                sys.executable,
                "-m",
                "benchmarks.metrics_cost",
                "--run-one",
                mode,
                "-n",
                str(n),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
    found = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def instructions_per_task(n: int) -> dict[str, float]:
    """Return instructions per task off, on, and the difference (callgrind, start-up cancelled)."""
    low = max(1, n // 5)
    counts = {(mode, k): instructions(mode, k) for mode in ("off", "on") for k in (low, n)}
    per_task = {mode: (counts[mode, n] - counts[mode, low]) / (n - low) for mode in ("off", "on")}
    return {
        "off_instructions": per_task["off"],
        "on_instructions": per_task["on"],
        "cost_instructions": per_task["on"] - per_task["off"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_cost", description=__doc__)
    parser.add_argument(
        "-n", type=int, default=None, help="tasks per block (20,000; callgrind 2,000)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="blocks on and off each (7)")
    parser.add_argument("--callgrind", action="store_true", help="count instructions instead")
    parser.add_argument("--run-one", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    setup_django()
    if args.run_one:
        run_one(args.run_one, args.n)
        return 0
    if args.callgrind:
        if shutil.which("valgrind") is None:
            print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
            return 2
        n = args.n or 2000
        figures = instructions_per_task(n)
        print(
            f"instructions per task (callgrind, {n} tasks): off {figures['off_instructions']:,.0f},"
            f" on {figures['on_instructions']:,.0f}, the metrics {figures['cost_instructions']:,.0f}"
        )
        return 0
    n = args.n or 20000
    figures = cpu_per_task(n, args.rounds)
    print(
        f"CPU per task (median of {args.rounds} blocks of {n}): off {figures['off_us']:.1f} µs, "
        f"on {figures['on_us']:.1f} µs, the metrics {figures['cost_us']:.1f} µs "
        f"({figures['cost_us'] / figures['off_us']:.1%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
