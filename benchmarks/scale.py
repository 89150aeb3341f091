"""django_tq at scale (SPEC §12): deep backlogs, more processes, more queues.

    .venv/bin/python -m benchmarks.scale [--brokers postgres,redis] [--parts backlog,concurrency,queues]
        [--backlogs 10000,100000,1000000] [--concurrency 1,2,4] [--queues 1,10,100] [-n 10000]

Three parts, on ``django://`` PostgreSQL and on ``redis://`` (results off, as the main
benchmark's drain rows; the same no-op task, ``benchmarks/probe.py``):

1. **backlog** — for each backlog size B: a fresh store filled with B tasks
   (``benchmarks/backlog.py``: django_tq's own encode and publish path, in bursts); then
   ``--claims`` claims of 4 messages (a prefork child's prefetch window) timed on a worker's
   channel (p50 / p99 / worst; target p99 ≤ 10 ms); then a worker (prefork, 2 children) starts
   with the backlog waiting and runs ``--sample`` tasks of it: the drain rate meanwhile and the
   worker tree's RSS after them (target: the same at every B);
2. **concurrency** — N tasks drained by a worker of 1, 2 and 4 prefork children: tasks/s and the
   worker tree's CPU time per task (µs, from its first task to its last; on 2 cores, 4 children
   measure contention, not scaling);
3. **queues** — N tasks spread evenly over Q queues, drained by one worker (2 children)
   consuming all Q (``-Q q_0,…``): tasks/s and CPU µs per task for Q = 1, 10, 100.

Every figure comes with the load average at its start and the CPU other processes used meanwhile
("other load", cores): on a shared machine, compare rows measured at a similar load. Stores are
the run's own (``benchmarks/namespace.py``) and removed at the end. A table is printed, and the
rows are written as JSON (``--json``, default ``benchmarks/results/scale-<time>.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import namespace
from benchmarks.namespace import PG_DB
from benchmarks.processes import (
    Recorder,
    WorkerGroup,
    cpu_snapshot,
    machine_busy,
    run_driver,
    tree_memory,
)
from benchmarks.report import fmt
from benchmarks.run import clean_up, git_state, machine, recreate_pg, service_up, stop_on_sigterm
from benchmarks.systems import REPO, Scenario, clean_broker, scenario_env

BROKERS = ("postgres", "redis")
PARTS = ("backlog", "concurrency", "queues")
SCHEMES = {"postgres": "django:// PostgreSQL", "redis": "redis://"}


class Run:
    """One scale run: its options, its work directory, and the rows measured so far."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rows: list[dict[str, Any]] = []

    def env(self, broker: str, record_dir: Path) -> dict[str, str]:
        return scenario_env(Scenario(broker, "tq"), record_dir, self.workdir / "unused.sqlite3")

    def prepare(self, broker: str, env: dict[str, str]) -> None:
        """Give the next measurement an empty store: a new database, an emptied Redis one."""
        recreate_pg(PG_DB)  # django_tq's tables (the queue table on django://)
        run_driver("tq", env, "setup", 120)
        if broker == "redis":
            clean_broker("redis")

    def fill(self, env: dict[str, str], n: int, queues: int = 0) -> dict[str, Any]:
        timeout = 120 + n / 500 * self.args.timeout_scale  # 500/s: far below the slowest seen
        args = ("--n", str(n), "--queues", str(queues))
        return run_driver("", env, "fill", timeout, *args, module="benchmarks.backlog")

    def worker(
        self, env: dict[str, str], concurrency: int, queues: list[str], name: str
    ) -> WorkerGroup:
        command = [
            sys.executable, "-m", "django", "tqworker", "-P", "prefork", "-c", str(concurrency),
            "-Q", ",".join(queues), "-l", "warning",
        ]  # fmt: skip
        return WorkerGroup([command], env, self.workdir / f"worker-{name}.log")


def queue_names(count: int) -> list[str]:
    base = namespace.queue("tq_bench")
    return [base] if count == 0 else [f"{base}_{index}" for index in range(count)]


def measure(group: WorkerGroup, recorder: Recorder, n: int, timeout: float) -> dict[str, Any]:
    """Wait for ``n`` tasks to run; return the rate and worker CPU per task from the first on."""
    start: list[Any] = []

    def done() -> bool:
        if not start and recorder.times["d"]:
            start.extend([cpu_snapshot(group.pids()), len(recorder.times["d"]), machine_busy()])
        return len(recorder.times["d"]) >= n

    finished = recorder.wait(done, time.monotonic() + timeout, group)
    d = sorted(recorder.times["d"])
    out: dict[str, Any] = {"ran": len(d)}
    if not finished or not start or len(d) <= start[1]:
        out["status"] = "timeout" if group.alive() else "worker exited"
        out["log"] = group.log_tail(800)
        return out
    (worker0, _), count0, (wall0, busy0) = start
    worker1, _ = cpu_snapshot(group.pids())
    wall1, busy1 = machine_busy()
    tasks = len(d) - count0
    out["rate"] = (len(d) - 1) / (d[-1] - d[0]) if d[-1] > d[0] else None
    out["cpu_us"] = (worker1 - worker0) / tasks * 1e6
    out["other_load"] = max(0.0, (busy1 - busy0) - (worker1 - worker0)) / max(1e-6, wall1 - wall0)
    return out


def run_worker(
    run: Run,
    env: dict[str, str],
    record_dir: Path,
    *,
    concurrency: int,
    queues: list[str],
    n: int,
    name: str,
) -> dict[str, Any]:
    """Start a worker on ``queues``, let it run ``n`` tasks, measure, stop it."""
    group = run.worker(env, concurrency, queues, name)
    try:
        out = measure(group, Recorder(record_dir), n, (60 + n / 50) * run.args.timeout_scale)
        if "rate" in out:
            time.sleep(0.5)
            out.update(tree_memory(group.pids()))
    finally:
        out_stop = group.stop()
    out["stop"] = out_stop
    return out


def backlog_part(run: Run, broker: str) -> None:
    for size in run.args.backlogs:
        record_dir = Path(tempfile.mkdtemp(prefix="rec-", dir=run.workdir))
        env = run.env(broker, record_dir)
        row: dict[str, Any] = {"part": "backlog", "broker": broker, "backlog": size}
        row["loadavg"] = os.getloadavg()[0]
        print(f"\n== {SCHEMES[broker]}: backlog {size:,} (load {row['loadavg']:.1f})", flush=True)
        run.prepare(broker, env)
        filled = run.fill(env, size)
        row.update(fill_rate=filled["rate"], depth=filled["depth"])
        print(
            f"   filled {size:,} in {filled['seconds']:.1f}s = {filled['rate']:,.0f}/s", flush=True
        )
        claims = run_driver(
            "", env, "claims", 300, "--n", str(run.args.claims), module="benchmarks.backlog"
        )
        row.update(claim_p50_ms=claims["p50_ms"], claim_p99_ms=claims["p99_ms"])
        row["claim_max_ms"] = claims["max_ms"]
        print(
            f"   claims: p50 {claims['p50_ms']:.2f} ms, p99 {claims['p99_ms']:.2f} ms, "
            f"worst {claims['max_ms']:.1f} ms ({claims['n']} claims of {claims['limit']})",
            flush=True,
        )
        if claims.get("plan"):
            row.update(plan=claims["plan"], server_ms=claims["server_ms"])
            print(
                f"   plan: {claims['plan']}; {claims['server_ms']:.3f} ms in the server", flush=True
            )
        sample = min(run.args.sample, size - (run.args.claims + 1) * 4)
        worker = run_worker(
            run, env, record_dir, concurrency=2, queues=queue_names(0), n=sample, name=f"b{size}"
        )
        row.update(worker)
        print(
            f"   worker: {fmt(worker.get('rate'))}/s over {sample:,} tasks, CPU "
            f"{fmt(worker.get('cpu_us'))} µs/task, RSS {fmt(worker.get('rss_mb'))} MiB "
            f"({worker.get('processes', '?')} processes){' ' + worker['status'] if 'status' in worker else ''}",
            flush=True,
        )
        run.rows.append(row)


def drain_part(run: Run, broker: str, part: str) -> None:
    """The concurrency or the queues part: N tasks drained, for each setting."""
    settings = run.args.concurrency if part == "concurrency" else run.args.queues
    for setting in settings:
        record_dir = Path(tempfile.mkdtemp(prefix="rec-", dir=run.workdir))
        env = run.env(broker, record_dir)
        concurrency, queues = (setting, 0) if part == "concurrency" else (2, setting)
        row: dict[str, Any] = {"part": part, "broker": broker, "setting": setting}
        row["loadavg"] = os.getloadavg()[0]
        what = f"{setting} process(es)" if part == "concurrency" else f"{setting} queue(s)"
        print(f"\n== {SCHEMES[broker]}: {what} (load {row['loadavg']:.1f})", flush=True)
        run.prepare(broker, env)
        run.fill(env, run.args.n, queues)
        worker = run_worker(
            run,
            env,
            record_dir,
            concurrency=concurrency,
            queues=queue_names(queues),
            n=run.args.n,
            name=f"{part}-{setting}",
        )
        row.update(worker)
        print(
            f"   {fmt(worker.get('rate'))}/s, CPU {fmt(worker.get('cpu_us'))} µs/task, RSS "
            f"{fmt(worker.get('rss_mb'))} MiB, other load {fmt(worker.get('other_load'), '.1f')} cores"
            f"{' ' + worker['status'] if 'status' in worker else ''}",
            flush=True,
        )
        run.rows.append(row)


# -- the table ---------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    out: list[str] = []
    backlog = [r for r in rows if r["part"] == "backlog"]
    if backlog:
        out += [
            "| broker | backlog | fill/s | claim p50 | claim p99 (≤ 10 ms) | worst | claim in the server (plan) | drain/s at depth | worker CPU µs/task | worker RSS (3 processes) | load |",
            "|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|",
        ]
        for r in backlog:
            out.append(
                f"| {SCHEMES[r['broker']]} | {r['backlog']:,} | {fmt(r.get('fill_rate'))} | "
                f"{fmt(r.get('claim_p50_ms'), '.2f')} ms | {fmt(r.get('claim_p99_ms'), '.2f')} ms | "
                f"{fmt(r.get('claim_max_ms'), '.1f')} ms | "
                f"{fmt(r.get('server_ms'), '.2f') + ' ms (' + r['plan'] + ')' if r.get('plan') else '—'} | "
                f"{fmt(r.get('rate'))} | {fmt(r.get('cpu_us'))} | "
                f"{fmt(r.get('rss_mb'))} MiB | {r['loadavg']:.1f} |"
            )
    for part, title in (("concurrency", "processes"), ("queues", "queues consumed")):
        part_rows = [r for r in rows if r["part"] == part]
        if not part_rows:
            continue
        out += [
            "",
            f"| broker | {title} | tasks/s | worker CPU µs/task | worker RSS | other load (cores) | load |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for r in part_rows:
            out.append(
                f"| {SCHEMES[r['broker']]} | {r['setting']} | {fmt(r.get('rate'))}"
                f"{' (' + r['status'] + ')' if 'status' in r else ''} | {fmt(r.get('cpu_us'))} | "
                f"{fmt(r.get('rss_mb'))} MiB | {fmt(r.get('other_load'), '.1f')} | {r['loadavg']:.1f} |"
            )
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------------------------
def numbers(value: str) -> list[int]:
    return [int(v.replace("_", "")) for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--brokers", default=",".join(BROKERS), help="postgres, redis")
    parser.add_argument("--parts", default=",".join(PARTS), help="backlog, concurrency, queues")
    parser.add_argument("--backlogs", type=numbers, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--concurrency", type=numbers, default=[1, 2, 4])
    parser.add_argument("--queues", type=numbers, default=[1, 10, 100])
    parser.add_argument("-n", type=int, default=10_000, help="tasks per concurrency/queues drain")
    parser.add_argument("--claims", type=int, default=1_000, help="claims timed per backlog")
    parser.add_argument(
        "--sample", type=int, default=10_000, help="tasks the worker runs from each backlog"
    )
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every deadline")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = (set(args.brokers) - set(BROKERS)) | (set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown choice(s): {', '.join(sorted(unknown))}")
    if min(args.backlogs) <= (args.claims + 1) * 4:
        parser.error(
            "every backlog must hold more than the messages the claims take (4 each, one untimed)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tq-scale-"))
    run = Run(args, workdir)
    started_at = f"{dt.datetime.now():%Y-%m-%d %H:%M}"
    print(f"django_tq scale benchmark — {started_at} — {machine()}")
    print(f"django_tq at {git_state()}; work directory: {workdir}")
    brokers = []
    for broker in args.brokers:
        reason = service_up(broker) or (service_up("postgres") if broker != "postgres" else None)
        if reason:
            print(f"\n== {SCHEMES[broker]}: skipped ({reason})")
        else:
            brokers.append(broker)
    stop_on_sigterm()
    try:
        if "redis" in brokers:
            print(f"Redis database {namespace.claim_redis_db()} claimed for this run")
        for broker in brokers:
            for part in args.parts:
                if part == "backlog":
                    backlog_part(run, broker)
                else:
                    drain_part(run, broker, part)
    finally:
        clean_up(set(brokers))
    print("\n## Scale (results off; worker: prefork; see benchmarks/scale.py)\n")
    print(table(run.rows))
    out = (
        Path(args.json)
        if args.json
        else REPO / "benchmarks" / "results" / f"scale-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"started": started_at, "machine": machine(), "rows": run.rows}, indent=2)
    )
    print(f"\nrows written to {out}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
