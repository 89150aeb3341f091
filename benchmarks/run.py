"""Benchmark django_tq against its best peers and the raw ceilings of each broker (SPEC §12).

    .venv-bench/bin/python -m benchmarks [--smoke | --quick | --tasks N] [--repeat R]
        [--brokers redis,amqp,postgres,sqlite]
        [--systems tq,celery,huey,dramatiq,procrastinate,raw]
        [--workloads enqueue,drain,latency,memory,results,results-redis]

The systems, per broker (``benchmarks/systems.py``): Redis — django_tq, Celery, Huey, Dramatiq,
raw redis-py, raw kombu; RabbitMQ — django_tq, Celery, Dramatiq, raw kombu (each publisher without
confirms also gets an enqueue-only row with confirms on: Dramatiq's ``confirm_delivery``, kombu's
``confirm_publish``); PostgreSQL — django_tq ``django://``, Procrastinate, raw psycopg SKIP
LOCKED; SQLite — django_tq ``django://``. Before each scenario every benchmark queue on its broker
is emptied — the run's own: a Redis database it claims, RabbitMQ queues and PostgreSQL databases
named after its pid (``benchmarks/namespace.py``), so two runs on one machine do not disturb each
other's data (only each other's timings) — then:

1. **enqueue** — one client process publishes N no-op tasks (tasks/s, after one warm-up publish);
2. **drain** — those N tasks wait in the queue; the worker starts (2 processes) and runs
   them; every task body appends ``time.time()`` to a per-process file (``benchmarks/probe.py``),
   so the rate is measured from the first to the last task start, and from worker start;
   **start→first** is worker spawn to the first task start (with the backlog waiting);
3. **memory** — RSS and PSS summed over the worker's process tree (``/proc``), after the drain;
4. **latency** — 300 tasks published 10 ms apart to the idle worker, each carrying its publish
   time; p50/p99 of start - publish;
5. **results** — enqueue + drain again with results stored in PostgreSQL (django_tq's defaults
   vs Celery + django-celery-results), N/5 tasks by default;
6. **results-redis** — enqueue + drain with results in Redis, Redis broker: django_tq
   ``django-cache`` on django-redis vs Celery's, Huey's and Dramatiq's Redis result backends.

``--metrics`` adds, after each django_tq row, the same drain with ``tqworker --metrics-port`` on
(nothing scrapes it: the row measures what the metrics cost a task) and a ratio row on / off.

``--repeat R`` runs the whole list R times, interleaved (A B C, A B C, …), and reports the median
of each figure. Everything is bounded: a worker that does not finish in time is killed and its
cells say ``timeout``. Every process started here runs in its own session and is killed by its
group. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import namespace
from benchmarks.namespace import PG_DATABASES, PG_DB, PG_PROCRASTINATE_DB, PG_RAW_DB
from benchmarks.processes import (
    BenchTimeout,
    Recorder,
    WorkerGroup,
    cpu_snapshot,
    machine_busy,
    percentile,
    run_driver,
    tree_memory,
)
from benchmarks.report import fmt, report
from benchmarks.systems import (
    AMQP_URL,
    BROKER_TITLES,
    HOST,
    RAW_SYSTEMS,
    REDIS_PORT,
    REPO,
    SYSTEMS,
    Scenario,
    build_scenarios,
    clean_broker,
    scenario_env,
    skip_reason,
    worker_commands,
)

WORKLOADS = ("enqueue", "drain", "latency", "memory", "results", "results-redis")


# -- services ------------------------------------------------------------------------------------
def service_up(broker: str) -> str | None:
    """Return why ``broker``'s service cannot be used, or None."""
    try:
        if broker == "redis":
            import redis

            redis.Redis(host=HOST, port=REDIS_PORT, socket_connect_timeout=2).ping()
        elif broker == "amqp":
            from kombu import Connection

            with Connection(AMQP_URL, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
        elif broker == "postgres":
            pg_admin("SELECT 1")
    except Exception as exc:  # any failure means "skip this broker"
        return f"{type(exc).__name__}: {exc}"
    return None


def compile_sources() -> None:
    """Write the bytecode of django_tq and the benchmark's modules, as installing a wheel does.

    The peers run from site-packages, byte-compiled by pip; django_tq runs from this work tree.
    With ``PYTHONDONTWRITEBYTECODE`` set (as in CI and in some shells) nothing would ever be
    cached, and every worker start would compile django_tq's ~200 modules again: about 0.5 s of
    CPU of its start→first figure that an installed django_tq never pays.
    """
    import compileall

    for package in ("django_tq", "benchmarks"):
        compileall.compile_dir(str(REPO / package), quiet=1)


def pg_admin(*statements: str) -> None:
    import psycopg

    with psycopg.connect(
        host=HOST, port=5432, user="postgres", dbname="postgres", autocommit=True, connect_timeout=5
    ) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def recreate_pg(name: str) -> None:
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')


def drop_pg(name: str) -> None:
    with contextlib.suppress(Exception):
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def claim_namespace(brokers: set[str]) -> None:
    """Claim this run's Redis database; drop the databases of benchmark runs that are gone."""
    if "redis" in brokers:
        db = namespace.claim_redis_db()
        print(f"Redis database {db} claimed for this run ({namespace.OWNER_KEY})", flush=True)
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(
            host=HOST, port=5432, user="postgres", dbname="postgres", connect_timeout=5
        ) as conn:
            names = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
        for name in namespace.stale_databases(names):
            print(f"dropping {name}: the benchmark run that made it is gone", flush=True)
            drop_pg(name)


def clean_up(brokers: set[str]) -> None:
    """Leave nothing behind: delete the run's queues, release its Redis database, drop its databases."""
    if "redis" in brokers:
        with contextlib.suppress(Exception):
            namespace.release_redis_db()
    if "amqp" in brokers:
        with contextlib.suppress(Exception):
            clean_broker("amqp")
        with contextlib.suppress(Exception):
            delete_exchanges()
    for name in PG_DATABASES:
        drop_pg(name)


def delete_exchanges() -> None:
    """Delete django_tq's remote control and events exchanges of this run (RabbitMQ)."""
    from kombu import Connection

    with Connection(AMQP_URL, connect_timeout=3) as conn:
        for topic in ("control", "events"):
            with contextlib.suppress(Exception):
                conn.channel().exchange_delete(f"{namespace.CONTROL_EXCHANGE}.{topic}")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a stopped run still cleans up (the ``finally`` below)."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# -- one scenario ----------------------------------------------------------------------------------
class Context:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.sqlite_path = workdir / "tq_bench.sqlite3"

    def env(self, sc: Scenario, record_dir: Path) -> dict[str, str]:
        return scenario_env(sc, record_dir, self.sqlite_path)

    def tasks(self, sc: Scenario) -> int:
        return self.args.results_n if sc.results == "db" else self.args.n


def prepare(ctx: Context, sc: Scenario, env: dict[str, str]) -> None:
    """Give ``sc`` an empty broker and fresh tables."""
    clean_broker(sc.broker)
    if sc.system == "tq" or (sc.system == "celery" and sc.results == "db"):
        if sc.broker == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{ctx.sqlite_path}{suffix}").unlink()
        else:
            recreate_pg(PG_DB)
        run_driver(sc.system, env, "setup", 120)
    elif sc.system in ("procrastinate", "raw-pg"):
        recreate_pg(PG_PROCRASTINATE_DB if sc.system == "procrastinate" else PG_RAW_DB)
        run_driver(sc.system, env, "setup", 120)


def new_row(sc: Scenario, n: int) -> dict[str, Any]:
    return {
        "key": sc.key,
        "label": sc.label,
        "short": sc.short,
        "role": sc.role,
        "broker": sc.broker,
        "system": sc.system,
        "results": sc.results,
        "confirm": sc.confirm,
        "bulk": sc.bulk,
        "batch": sc.batch,
        "n": n,
    }


def run_scenario(ctx: Context, sc: Scenario, workloads: set[str]) -> dict[str, Any]:
    args = ctx.args
    n = ctx.tasks(sc)
    row = new_row(sc, n)
    record_dir = Path(tempfile.mkdtemp(prefix=f"rec-{sc.system}-", dir=ctx.workdir))
    env = ctx.env(sc, record_dir)
    row["loadavg_before"] = os.getloadavg()[0]
    print(f"\n== {sc.label}  (N={n}; load average {row['loadavg_before']:.2f})", flush=True)
    prepare(ctx, sc, env)

    bulk = ["--bulk"] if sc.bulk else []
    enq = run_driver(
        sc.system, env, "enqueue", 60 + n / 50 * args.timeout_scale, "--n", str(n), *bulk
    )
    row["enqueue_rate"] = enq["rate"]
    print(f"   enqueue: {n} in {enq['seconds']:.2f}s = {enq['rate']:,.0f}/s", flush=True)
    if workloads <= {"enqueue"} or sc.enqueue_only:
        return row

    recorder = Recorder(record_dir)
    log_path = ctx.workdir / f"worker-{sc.key.replace('/', '-')}.log"
    spawned = time.time()
    group = WorkerGroup(worker_commands(sc), env, log_path)
    try:
        # a bound for a hung worker, not a target: the slowest row (results in PostgreSQL) runs ~35/s
        deadline = time.monotonic() + (60 + n / 20) * args.timeout_scale
        cpu_start: list[Any] = []

        def drained() -> bool:
            if not cpu_start and recorder.times["d"]:
                cpu_start.extend(
                    [cpu_snapshot(group.pids()), len(recorder.times["d"]), machine_busy()]
                )
            return len(recorder.drain_ids) >= n

        finished = recorder.wait(drained, deadline, group)
        d = sorted(recorder.times["d"])
        if finished and cpu_start and len(d) > cpu_start[1]:
            (worker0, services0), count0, (wall0, busy0) = cpu_start
            worker1, services1 = cpu_snapshot(group.pids())
            wall1, busy1 = machine_busy()
            ours = (worker1 - worker0) + sum(services1.values()) - sum(services0.values())
            # CPU used by anything else on the machine meanwhile (other people's tests disturb us)
            row["other_load_cores"] = max(0.0, (busy1 - busy0) - ours) / max(1e-6, wall1 - wall0)
            tasks = len(d) - count0
            row["worker_cpu_us"] = (worker1 - worker0) / tasks * 1e6
            row["services_cpu_us"] = {
                name: (services1.get(name, 0.0) - services0.get(name, 0.0)) / tasks * 1e6
                for name in services1
            }
            service = {"redis": "redis", "amqp": "rabbitmq", "postgres": "postgres"}.get(sc.broker)
            if service:
                row["service"] = service
                row["service_cpu_us"] = row["services_cpu_us"].get(service)
        row["drained"] = len(recorder.drain_ids)
        row["duplicates"] = len(d) - len(recorder.drain_ids)
        starts = d + recorder.times["w"]
        if starts:
            row["start_to_first_s"] = min(starts) - spawned
        if not finished:
            row["drain_status"] = "timeout" if group.alive() else "worker exited"
            row["worker_log"] = group.log_tail()
            print(
                f"   drain: {row['drain_status']} after {len(recorder.drain_ids)}/{n} tasks",
                flush=True,
            )
            return row
        row["drain_rate"] = (len(d) - 1) / (d[-1] - d[0]) if d[-1] > d[0] else None
        row["drain_rate_from_start"] = len(d) / (d[-1] - spawned)
        row["drain_seconds"] = d[-1] - d[0]
        print(
            f"   drain: {n} in {d[-1] - d[0]:.2f}s = {fmt(row['drain_rate'])}/s "
            f"({row['drain_rate_from_start']:,.0f}/s from worker start; first task "
            f"{row['start_to_first_s']:.2f}s after spawn; duplicates {row['duplicates']}; "
            f"CPU/task: worker {fmt(row.get('worker_cpu_us'))} µs, {row.get('service', 'server')} {fmt(row.get('service_cpu_us'))} µs)",
            flush=True,
        )
        if sc.results:
            return row

        if "memory" in workloads:
            time.sleep(1.0)
            row.update(tree_memory(group.pids()))
            print(
                f"   memory: RSS {row['rss_mb']:.0f} MiB, PSS {row['pss_mb']:.0f} MiB in {row['processes']} processes",
                flush=True,
            )

        if "latency" in workloads:
            count = args.latency_n
            run_driver(
                sc.system,
                env,
                "latency",
                60 + count * args.latency_interval * 2,
                "--n",
                str(count),
                "--interval",
                str(args.latency_interval),
            )
            ok = recorder.wait(
                lambda: len(recorder.latencies) >= count,
                time.monotonic() + 20 * args.timeout_scale,
                group,
            )
            lat = recorder.latencies
            if ok:
                row["p50_ms"] = percentile(lat, 0.50) * 1000
                row["p99_ms"] = percentile(lat, 0.99) * 1000
                print(
                    f"   latency: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms ({count} tasks)",
                    flush=True,
                )
            else:
                row["latency_status"] = f"timeout ({len(lat)}/{count})"
                print(f"   latency: {row['latency_status']}", flush=True)
    finally:
        row["stop"] = group.stop()
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        row["db_locked_errors"] = log.count("database is locked")
        row["worker_errors"] = sum(log.count(w) for w in ("Traceback", "ERROR", "CRITICAL"))
        if row["worker_errors"]:
            row.setdefault("worker_log", log[-1500:])
    return row


def run_guarded(ctx: Context, sc: Scenario, workloads: set[str]) -> dict[str, Any]:
    """Run ``sc``; a broken scenario becomes an error row instead of ending the run."""
    try:
        return run_scenario(ctx, sc, workloads)
    except Exception as exc:
        status = "timeout" if isinstance(exc, BenchTimeout) else "error"
        print(f"   {status}: {exc}", flush=True)
        return {**new_row(sc, ctx.tasks(sc)), "error": f"{status}: {exc}"}


# -- repeated runs ----------------------------------------------------------------------------------
SUMMED = ("duplicates", "db_locked_errors", "worker_errors")
FAILURE_KEYS = ("error", "drain_status", "latency_status", "worker_log")


def median_row(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the rows of one scenario's rounds: the median of each figure, problems summed."""
    if len(rounds) == 1:
        return rounds[0]
    row = {k: v for k, v in rounds[0].items() if k not in FAILURE_KEYS}
    figures = {
        k
        for r in rounds
        for k, v in r.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for key in figures - {"n"}:
        values = [r[key] for r in rounds if isinstance(r.get(key), int | float)]
        row[key] = sum(values) if key in SUMMED else statistics.median(values)
    failed = [r for r in rounds if any(r.get(k) for k in ("error", "drain_status"))]
    row["rounds"] = len(rounds)
    row["rounds_failed"] = len(failed)
    for key in FAILURE_KEYS:  # a status stands only where no round measured the figure
        statuses = [r[key] for r in rounds if r.get(key)]
        if statuses and len(statuses) == len(rounds):
            row[key] = statuses[0]
    if "drain_rate" in row:
        row.pop("drain_status", None)
    services = {name for r in rounds for name in r.get("services_cpu_us", {})}
    if services:
        row["services_cpu_us"] = {
            name: statistics.median(
                r["services_cpu_us"][name] for r in rounds if name in r.get("services_cpu_us", {})
            )
            for name in services
        }
    row["stop"] = (
        "killed" if any(r.get("stop") == "killed" for r in rounds) else rounds[0].get("stop")
    )
    return row


# -- provenance ------------------------------------------------------------------------------------
def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "django_tq"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in django_tq/' if dirty else ''}"


def machine() -> str:
    from importlib.metadata import version

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for name in (
        "django", "kombu", "celery", "huey", "dramatiq", "procrastinate", "redis", "django-redis",
        "psycopg", "amqp", "pika", "billiard",
    ):  # fmt: skip
        with contextlib.suppress(Exception):
            versions.append(f"{name} {version(name)}")
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}; "
        + ", ".join(versions)
    )


# -- main ------------------------------------------------------------------------------------------
def split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-n",
        "--tasks",
        dest="n",
        type=int,
        default=None,
        help="tasks to enqueue and drain (default 10,000; --quick 2,000; --smoke 500)",
    )
    parser.add_argument("--quick", action="store_true", help="N=2,000 and 100 latency probes")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="N=500, 200 results-on tasks, 50 latency probes: does every row run? (not figures)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run everything R times, interleaved, and report medians (default 1)",
    )
    parser.add_argument(
        "--brokers",
        default=",".join(BROKER_TITLES),
        help="comma-separated: redis, amqp, postgres, sqlite",
    )
    parser.add_argument(
        "--systems",
        default=",".join(s for s in SYSTEMS if s not in RAW_SYSTEMS) + ",raw",
        help=f"comma-separated: {', '.join(SYSTEMS)}; 'raw' = every raw ceiling",
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {', '.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--results-brokers",
        default="redis,amqp,postgres",
        help="brokers for the results-in-PostgreSQL drain",
    )
    parser.add_argument(
        "--results-n",
        type=int,
        default=None,
        help="tasks for the results-in-PostgreSQL drain (default N/5, at least 200)",
    )
    parser.add_argument(
        "--latency-n",
        type=int,
        default=None,
        help="latency probes (default 300; --quick 100; --smoke 50)",
    )
    parser.add_argument(
        "--latency-interval", type=float, default=0.01, help="seconds between latency probes"
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also drain django_tq with the worker's metrics port on (a row after each django_tq "
        "row; with --repeat, rounds interleave on and off)",
    )
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every deadline")
    parser.add_argument(
        "--json", help="also write the rows as JSON here (default benchmarks/results/<time>.json)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (worker logs, probe files)"
    )
    args = parser.parse_args(argv)
    args.n = args.n or (500 if args.smoke else 2_000 if args.quick else 10_000)
    args.results_n = args.results_n or max(200, args.n // 5)
    args.latency_n = args.latency_n or (50 if args.smoke else 100 if args.quick else 300)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    brokers = split(args.brokers)
    systems = set(split(args.systems))
    if "raw" in systems:
        systems = (systems - {"raw"}) | set(RAW_SYSTEMS)
    workloads = set(split(args.workloads))
    unknown = (
        (set(brokers) - set(BROKER_TITLES))
        | (systems - set(SYSTEMS))
        | (workloads - set(WORKLOADS))
    )
    if unknown:
        print(f"unknown choice(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    scenarios = build_scenarios(
        brokers, systems, workloads, split(args.results_brokers), metrics=args.metrics
    )

    workdir = Path(tempfile.mkdtemp(prefix="tq-bench-"))
    ctx = Context(args, workdir)
    compile_sources()
    started = time.monotonic()
    started_at = f"{dt.datetime.now():%Y-%m-%d %H:%M}"
    print(f"django_tq benchmark — {started_at} — N={args.n}, {args.repeat} round(s) — {machine()}")
    git_at_start = git_state()  # the work tree may change under a long run: say what it started on
    print(f"django_tq at {git_at_start}; work directory: {workdir}")
    down = {b: service_up(b) for b in {*brokers, "postgres"} - {"sqlite"}}
    runnable: list[Scenario] = []
    skipped: list[tuple[str, str]] = []
    for sc in scenarios:
        reason = (
            skip_reason(sc)
            or (down.get(sc.broker) if sc.broker != "sqlite" else None)
            or (down.get("postgres") if sc.needs_postgres else None)
        )
        if reason:
            skipped.append((sc.label, reason))
            print(f"\n== {sc.label}: skipped ({reason})", flush=True)
        else:
            runnable.append(sc)
    rounds: dict[str, list[dict[str, Any]]] = {sc.key: [] for sc in runnable}
    stop_on_sigterm()
    try:
        claim_namespace({sc.broker for sc in runnable})
        for round_number in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f"\n#### round {round_number} of {args.repeat}", flush=True)
            for sc in runnable:
                rounds[sc.key].append(run_guarded(ctx, sc, workloads))
    finally:
        clean_up({sc.broker for sc in runnable})
    rows = [median_row(per_round) for per_round in rounds.values() if per_round]

    medians = f", medians of {args.repeat} interleaved rounds" if args.repeat > 1 else ""
    print(
        f"\n## Results (N={args.n}, {args.latency_n} latency probes{medians}, "
        f"{time.monotonic() - started:.0f}s)\n"
    )
    print(report(rows, skipped))
    out = (
        Path(args.json)
        if args.json
        else REPO / "benchmarks" / "results" / f"{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "n": args.n,
                "repeat": args.repeat,
                "started": started_at,
                "machine": machine(),
                "git_at_start": git_at_start,
                "git_at_end": git_state(),
                "rows": rows,
                "rounds": rounds,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nrows written to {out}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
