"""Where the time goes: profile django_tq's enqueue loop and one worker child.

    .venv-bench/bin/python -m benchmarks.profile enqueue --broker redis -n 5000
    .venv-bench/bin/python -m benchmarks.profile worker  --broker redis -n 10000 [--system celery]

``enqueue`` runs the benchmark's enqueue driver under cProfile and prints the top functions with
their cost per task. ``worker`` pre-enqueues N tasks, starts the same prefork worker as the
benchmark, attaches py-spy (sampling, ``--nonblocking --idle``: wall-clock, so waiting on the
broker shows up) to every process of the worker tree while it drains, and prints, per process,
the µs per task spent in each stage (claim, decode, execute, record, ack, wait, …) and the top
self-time functions. Needs py-spy (``pip install py-spy``) and ptrace rights (root here).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import namespace
from benchmarks.namespace import PG_DATABASES
from benchmarks.processes import Recorder, WorkerGroup, process_tree, run_driver
from benchmarks.run import Context, compile_sources, drop_pg, prepare
from benchmarks.systems import BROKER_TITLES, REPO, SYSTEMS, Scenario, worker_commands

# Stages of a consumer or publisher: (stage, [(function name, file substring), ...]). A sample
# belongs to the stage of the innermost frame that matches (so the probe inside ``execute`` is
# "task body", and redis-py inside ``_ack`` is "ack").
STAGES: list[tuple[str, list[tuple[str, str]]]] = [
    ("task body (probe)", [("record", "benchmarks/probe.py")]),
    (
        "ack",
        [
            ("ack_leases", ""),
            ("_ack", "django_tq/transport"),
            ("ack", "kombu/message.py"),
            ("basic_ack", ""),
        ],
    ),
    ("release/requeue", [("release_leases", ""), ("_release", "django_tq/transport")]),
    ("lease renewal", [("renew_leases", "")]),
    ("claim", [("_claim", "django_tq/transport"), ("_claim_in_transaction", "")]),
    (
        "wait for messages (idle)",
        [
            ("wait", "django_tq/transport"),
            ("_brpop_read", ""),
            ("drain_events", "amqp/connection.py"),
        ],
    ),
    ("publish (broker)", [("publish", "django_tq/broker/__init__.py")]),
    ("encode + size check", [("encode", "django_tq/enqueue.py")]),
    ("build message", [("build_message", "django_tq/tasks.py")]),
    (
        "record outcome (results)",
        [("record", "django_tq/execution.py"), ("mark_started", ""), ("mark_queued", "")],
    ),
    ("execute (wrapper around the body)", [("execute", "django_tq/execution.py")]),
    ("decode message", [("_decode", "django_tq/worker/consumer.py")]),
    ("close_old_connections", [("close_old_connections", "")]),
    ("signals", [("send", "django_tq/signals.py")]),
    ("housekeeping (heartbeat, reaping)", [("tick", "django_tq/worker/worker.py")]),
    (
        "kombu delivery plumbing",
        [("drain_events", "kombu/"), ("_deliver", "kombu/"), ("on_delivery", "django_tq/worker")],
    ),
]


def _split(frame: str) -> tuple[str, str]:
    name, _, where = frame.partition(" (")
    return name, where


def stage_of(frames: list[str], stages: list[tuple[str, list[tuple[str, str]]]] = STAGES) -> str:
    for frame in reversed(frames):  # innermost first
        name, where = _split(frame)
        short = name.rsplit(".", 1)[-1]
        for stage, patterns in stages:
            for func, path in patterns:
                if (short == func or name == func) and path in where:
                    return stage
    return "other"


def read_raw(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def summarize(path: Path, tasks: int, rate: int, label: str, top: int = 25) -> str:
    stacks = read_raw(path)
    threads: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        threads[frames[0]] += count
    out = [f"### {label}: {sum(threads.values())} samples at {rate}/s, {tasks} tasks"]
    for thread, count in threads.most_common():
        out.append(f"  thread {thread}: {count} samples = {count / rate:.2f}s")
    main_thread = threads.most_common(1)[0][0] if threads else ""
    stacks = [(frames[1:], count) for frames, count in stacks if frames[0] == main_thread]
    total = sum(count for _, count in stacks)
    per_task = 1e6 / rate / max(1, tasks)
    stages: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        stages[stage_of(frames)] += count
        if frames:
            self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    out.append(
        f"  busiest thread {main_thread}: {total / rate:.2f}s = {total * per_task:.0f} µs per task"
    )
    out.append("  stage                               µs/task   share")
    for name, count in stages.most_common():
        out.append(f"  {name:<34} {count * per_task:8.1f}  {100 * count / max(1, total):5.1f}%")
    out.append(f"  top {top} functions by self time (µs/task, share):")
    for frame, count in self_time.most_common(top):
        out.append(f"    {count * per_task:7.1f}  {100 * count / max(1, total):5.1f}%  {frame}")
    out.append(f"  top {top} functions by inclusive time (µs/task, share):")
    for frame, count in inclusive.most_common(top + 10)[: top + 10]:
        out.append(f"    {count * per_task:7.1f}  {100 * count / max(1, total):5.1f}%  {frame}")
    return "\n".join(out)


def profile_enqueue(args: argparse.Namespace, ctx: Context, sc: Scenario) -> None:
    record_dir = Path(tempfile.mkdtemp(dir=ctx.workdir))
    env = ctx.env(sc, record_dir)
    prepare(ctx, sc, env)
    plain = run_driver(sc.system, env, "enqueue", 600, "--n", str(args.n))
    print(
        f"enqueue without profiler: {plain['rate']:,.0f}/s = {1e6 / plain['rate']:.0f} µs per task"
    )
    prepare(ctx, sc, env)
    out = ctx.workdir / "enqueue.prof"
    profiled = run_driver(sc.system, env, "enqueue", 600, "--n", str(args.n), "--profile", str(out))
    print(
        f"enqueue under cProfile: {profiled['rate']:,.0f}/s (cProfile inflates Python-heavy code)"
    )
    stats = pstats.Stats(str(out))
    total = stats.total_tt  # type: ignore[attr-defined]
    per = 1e6 / args.n
    rows = sorted(stats.stats.items(), key=lambda item: item[1][3], reverse=True)  # type: ignore[attr-defined]
    print(
        f"\ntotal profiled time {total:.2f}s = {total * per:.0f} µs per task; by cumulative time:"
    )
    print("   cum µs/task  self µs/task  calls/task  function")
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in rows[: args.top]:
        if ct * per < args.min_us:
            break
        short = filename.split("site-packages/")[-1].replace(str(REPO) + "/", "")
        print(
            f"   {ct * per:10.1f}  {tt * per:12.1f}  {nc / args.n:10.2f}  {name} ({short}:{line})"
        )
    print("\nby self time:")
    for (filename, line, name), (_cc, nc, tt, _ct, _callers) in sorted(
        rows, key=lambda item: item[1][2], reverse=True
    )[: args.top]:
        short = filename.split("site-packages/")[-1].replace(str(REPO) + "/", "")
        print(
            f"   {tt * per:10.1f} µs/task  {nc / args.n:6.2f} calls/task  {name} ({short}:{line})"
        )


def profile_worker(args: argparse.Namespace, ctx: Context, sc: Scenario) -> None:
    if shutil.which("py-spy") is None and not Path(sys.executable).with_name("py-spy").exists():
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    record_dir = Path(tempfile.mkdtemp(dir=ctx.workdir))
    env = ctx.env(sc, record_dir)
    prepare(ctx, sc, env)
    run_driver(sc.system, env, "enqueue", 600, "--n", str(args.n))
    recorder = Recorder(record_dir)
    group = WorkerGroup(worker_commands(sc), env, ctx.workdir / "worker.log")
    spies: list[tuple[int, Path, subprocess.Popen[bytes]]] = []
    try:
        # attach as soon as the pool's children exist (they start on a backlog at once)
        deadline = time.monotonic() + 20
        want = 3 if len(worker_commands(sc)) == 1 else 2  # a parent and 2 children, or 2 alone
        pids: list[int] = []
        while time.monotonic() < deadline:
            pids = [p for p in process_tree(group.pids()) if _is_python(p)]
            if len(pids) >= want:
                break
            time.sleep(0.02)
        for pid in pids:
            out = ctx.workdir / f"spy-{pid}.txt"
            spy = subprocess.Popen(
                [pyspy, "record", "--pid", str(pid), "--rate", str(args.rate), "--format", "raw", "--output", str(out),
                 "--nonblocking", "--idle", "--threads", "--function"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            spies.append((pid, out, spy))
        recorder.wait(lambda: len(recorder.drain_ids) >= args.n, time.monotonic() + 300, group)
        d = sorted(recorder.times["d"])
        print(
            f"drained {len(recorder.drain_ids)}/{args.n} under py-spy: {(len(d) - 1) / (d[-1] - d[0]):,.0f}/s"
        )
    finally:
        for _, _, spy in spies:
            with contextlib.suppress(ProcessLookupError):
                spy.send_signal(signal.SIGINT)
        for _, _, spy in spies:
            try:
                spy.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(spy.pid, signal.SIGKILL)
        group.stop()
    per_pid = {pid: _tasks_run_by(recorder, pid) for pid, _, _ in spies}
    for pid, out, _ in spies:
        if not out.exists():
            print(f"(no py-spy output for pid {pid})")
            continue
        tasks = per_pid[pid] if per_pid[pid] else max(1, len(recorder.times["d"]))
        role = "pool child" if per_pid[pid] else "main process (tasks: all)"
        print()
        print(summarize(out, tasks, args.rate, f"{sc.label} pid {pid} ({role})", args.top))


def _is_python(pid: int) -> bool:
    try:
        return "python" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False


def _tasks_run_by(recorder: Recorder, pid: int) -> int:
    """Return how many tasks process ``pid`` ran (0 if it ran none)."""
    for path in recorder.directory.glob(f"rec-{pid}.log"):
        return sum(1 for line in path.read_text().splitlines() if line.startswith("d "))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", choices=["enqueue", "worker"])
    parser.add_argument("--broker", default="redis", choices=list(BROKER_TITLES))
    parser.add_argument("--system", default="tq", choices=list(SYSTEMS))
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--min-us", type=float, default=1.0, help="hide functions under this many µs per task"
    )
    parser.add_argument(
        "--results",
        nargs="?",
        const="db",
        default="",
        choices=["db", "redis"],
        help="results on: db (django_tq defaults, the default) or redis (django-cache on django-redis)",
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tq-profile-"))
    ns = argparse.Namespace(n=args.n, results_n=args.n, timeout_scale=1.0)
    ctx = Context(ns, workdir)
    compile_sources()
    if args.broker not in SYSTEMS[args.system].brokers:
        parser.error(f"{args.system} does not run on {args.broker}")
    sc = Scenario(args.broker, args.system, results=args.results)
    print(f"profiling {args.what} of {sc.label}, N={args.n}; files in {workdir}")
    try:
        if sc.broker == "redis":
            namespace.claim_redis_db()
        if args.what == "enqueue":
            profile_enqueue(args, ctx, sc)
        else:
            profile_worker(args, ctx, sc)
    finally:
        if sc.broker == "redis":
            namespace.release_redis_db()
        for name in PG_DATABASES:
            drop_pg(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
