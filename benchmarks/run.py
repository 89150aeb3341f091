"""Benchmark django_tq against its peers on the same broker, machine and run (SPEC §12).

    .venv-bench/bin/python -m benchmarks [--quick] [-n N] [--brokers redis,amqp,postgres,sqlite]
        [--systems tq,celery,procrastinate] [--workloads enqueue,drain,latency,memory,results]

For each broker, each system gets a fresh queue (Redis DB flushed, RabbitMQ queue deleted,
PostgreSQL database dropped and created, SQLite file removed), then:

1. **enqueue** — one client process publishes N no-op tasks (tasks/s, after one warm-up publish);
2. **drain** — those N tasks wait in the queue; the worker starts (2 prefork processes) and runs
   them; every task body appends ``time.time()`` to a per-process file (``benchmarks/probe.py``),
   so the rate is measured from the first to the last task start, and from worker start;
   **start→first** is worker spawn to the first task start (with the backlog waiting);
3. **memory** — RSS and PSS summed over the worker's process tree (``/proc``), after the drain;
4. **latency** — 300 tasks published 10 ms apart to the idle worker, each carrying its publish
   time; p50/p99 of start - publish;
5. **results** — enqueue + drain again with results stored in PostgreSQL (django_tq's defaults
   vs Celery + django-celery-results).

Everything is bounded: a worker that does not finish in time is killed and its cells say
``timeout``. Every process started here runs in its own session and is killed by its group.
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # ``python benchmarks/run.py`` as well as ``python -m benchmarks``
    sys.path.insert(0, str(REPO))

HOST = "127.0.0.1"
PG_DB = "tq_bench"
PG_PROCRASTINATE_DB = "tq_bench_procrastinate"
REDIS_DB = {"celery": 11, "tq": 12}  # the test suite uses DB 5; ours are flushed per run
AMQP_URL = f"amqp://guest:guest@{HOST}:5672//"
QUEUES = {"tq": "tq_bench", "celery": "celery_bench", "procrastinate": "procrastinate_bench"}
CONCURRENCY = 2

BROKER_TITLES = {
    "redis": "Redis",
    "amqp": "RabbitMQ",
    "postgres": "PostgreSQL (django://)",
    "sqlite": "SQLite (django://)",
}
PEERS = {"redis": "celery", "amqp": "celery", "postgres": "procrastinate", "sqlite": None}
WORKLOADS = ("enqueue", "drain", "latency", "memory", "results")


# -- scenarios -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Scenario:
    broker: str
    system: str
    results: bool = False

    @property
    def label(self) -> str:
        if self.system == "tq":
            scheme = {
                "redis": "redis://",
                "amqp": "amqp://",
                "postgres": "django:// PG",
                "sqlite": "django:// SQLite",
            }
            return f"django_tq {scheme[self.broker]}" + (
                " + django-db results" if self.results else ""
            )
        if self.system == "celery":
            return f"Celery + {BROKER_TITLES[self.broker]}" + (
                " + django-celery-results" if self.results else ""
            )
        return "Procrastinate (PostgreSQL)"

    @property
    def key(self) -> str:
        return f"{self.broker}/{self.system}" + ("/results" if self.results else "")


def tq_broker_url(broker: str) -> str:
    return {
        "redis": f"redis://{HOST}:6379/{REDIS_DB['tq']}",
        "amqp": AMQP_URL,
        "postgres": "django://",
        "sqlite": "django://",
    }[broker]


def celery_broker_url(broker: str) -> str:
    return {"redis": f"redis://{HOST}:6379/{REDIS_DB['celery']}", "amqp": AMQP_URL}[broker]


# -- availability --------------------------------------------------------------------------------
def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def service_up(broker: str) -> str | None:
    """Return why ``broker``'s service cannot be used, or None."""
    try:
        if broker == "redis":
            import redis

            redis.Redis(host=HOST, socket_connect_timeout=2).ping()
        elif broker == "amqp":
            from kombu import Connection

            with Connection(AMQP_URL, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
        elif broker == "postgres":
            pg_admin("SELECT 1")
    except Exception as exc:  # any failure means "skip this broker"
        return f"{type(exc).__name__}: {exc}"
    return None


def skip_reason(sc: Scenario) -> str | None:
    if sc.system == "tq" and sc.broker == "redis" and not has_module("django_tq.transport.redis"):
        return "django_tq.transport.redis is not importable yet"
    if sc.system == "celery" and not has_module("celery"):
        return "celery is not installed"
    if sc.system == "celery" and sc.results and not has_module("django_celery_results"):
        return "django-celery-results is not installed"
    if sc.system == "procrastinate" and not has_module("procrastinate"):
        return "procrastinate is not installed"
    return None


# -- services ------------------------------------------------------------------------------------
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


def clean_broker(sc: Scenario) -> None:
    if sc.broker == "redis":
        import redis

        redis.Redis(host=HOST, db=REDIS_DB[sc.system], socket_connect_timeout=2).flushdb()
    elif sc.broker == "amqp":
        from kombu import Connection

        with Connection(AMQP_URL, connect_timeout=3) as conn:
            channel = conn.channel()
            for queue in (QUEUES["tq"], QUEUES["celery"]):
                channel.queue_delete(queue)


# -- processes -----------------------------------------------------------------------------------
class Context:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.sqlite_path = workdir / "tq_bench.sqlite3"

    def env(self, sc: Scenario, record_dir: Path) -> dict[str, str]:
        keep = ("BENCH_TQ_TRANSPORT_OPTIONS",)  # what-if experiments pass through
        env = {
            k: v
            for k, v in os.environ.items()
            if k in keep or not k.startswith(("BENCH_", "DJANGO_SETTINGS_MODULE", "TQ_"))
        }
        env.update(
            PYTHONPATH=str(REPO),
            BENCH_RECORD_DIR=str(record_dir),
            BENCH_RESULTS="1" if sc.results else "0",
            BENCH_PG_NAME=PG_DB,
            BENCH_DB="sqlite" if sc.broker == "sqlite" else "postgres",
            BENCH_SQLITE_PATH=str(self.sqlite_path),
        )
        if sc.system == "tq":
            env.update(
                DJANGO_SETTINGS_MODULE="benchmarks.settings",
                BENCH_TQ_BROKER=tq_broker_url(sc.broker),
            )
        elif sc.system == "celery":
            env["BENCH_CELERY_BROKER"] = celery_broker_url(sc.broker)
            if sc.results:
                env["BENCH_CELERY_RESULTS"] = "1"
        elif sc.system == "procrastinate":
            env["BENCH_PROCRASTINATE_DSN"] = (
                f"postgresql://postgres@{HOST}:5432/{PG_PROCRASTINATE_DB}"
            )
        return env


def run_driver(
    ctx: Context, sc: Scenario, env: dict[str, str], action: str, timeout: float, *extra: str
) -> dict[str, Any]:
    """Run ``benchmarks.driver`` for ``sc``; return its JSON answer (raise on failure/timeout)."""
    cmd = [sys.executable, "-m", "benchmarks.driver", sc.system, action, *extra]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.communicate()
        raise BenchTimeout(f"driver {action} took longer than {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"driver {action} failed ({proc.returncode}): {err.strip()[-1500:]}")
    return json.loads(out.strip().splitlines()[-1])


class BenchTimeout(Exception):
    pass


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def worker_commands(sc: Scenario) -> list[list[str]]:
    py = sys.executable
    c = str(CONCURRENCY)
    if sc.system == "tq":
        return [
            [
                py,
                "-m",
                "django",
                "tqworker",
                "-P",
                "prefork",
                "-c",
                c,
                "-Q",
                QUEUES["tq"],
                "-l",
                "warning",
            ]
        ]
    if sc.system == "celery":
        return [[
            py, "-m", "celery", "-A", "benchmarks.celery_app", "worker", "-P", "prefork", "-c", c,
            "-Q", QUEUES["celery"], "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]]  # fmt: skip
    # Procrastinate's worker is one asyncio process: run two of them for two processes.
    return [
        [
            py,
            "-m",
            "procrastinate",
            "--app=benchmarks.procrastinate_app.app",
            "worker",
            "-q",
            QUEUES["procrastinate"],
            "-c",
            "1",
        ]
        for _ in range(CONCURRENCY)
    ]


class WorkerGroup:
    """The worker process(es) of one scenario, each in its own session."""

    def __init__(self, commands: list[list[str]], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115
        self.procs = [
            subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for cmd in commands
        ]

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self, timeout: float = 15.0) -> str:
        """Warm-stop (SIGTERM), then kill whatever is left of each process group; say which."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        how = "clean"
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                how = "killed"
        for p in self.procs:
            kill_group(p.pid)  # stragglers (children left behind) die with their group
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        self.log.close()
        return how

    def log_tail(self, chars: int = 1500) -> str:
        self.log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# -- measurement -----------------------------------------------------------------------------------
class Recorder:
    """Reads the probe files incrementally: start times per phase, drain indexes, latencies."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets: dict[str, int] = {}
        self.times: dict[str, list[float]] = {"d": [], "w": [], "l": []}
        self.drain_ids: set[float] = set()
        self.latencies: list[float] = []

    def poll(self) -> None:
        for entry in os.scandir(self.directory):
            if not entry.name.startswith("rec-"):
                continue
            offset = self.offsets.get(entry.name, 0)
            with open(entry.path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            if not end:
                continue
            self.offsets[entry.name] = offset + end
            for line in chunk[:end].decode().splitlines():
                phase, started, sent = line.split()
                t, s = float(started), float(sent)
                self.times.setdefault(phase, []).append(t)
                if phase == "d":
                    self.drain_ids.add(s)
                elif phase == "l":
                    self.latencies.append(t - s)

    def wait(self, done: Any, deadline: float, group: WorkerGroup) -> bool:
        while True:
            self.poll()
            if done():
                return True
            if time.monotonic() >= deadline or not group.alive():
                self.poll()
                return bool(done())
            time.sleep(0.1)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def process_tree(roots: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    seen: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(children.get(pid, []))
    return seen


SERVICES = {"redis-server": "redis", "beam.smp": "rabbitmq", "postgres": "postgres"}


def machine_busy() -> tuple[float, float]:
    """Return (wall clock, CPU seconds the whole machine was busy, all cores) so far."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    own = os.times()
    return time.monotonic(), (user + nice + system + irq + softirq + steal) / os.sysconf(
        "SC_CLK_TCK"
    ) - (own.user + own.system)


def cpu_snapshot(roots: list[int]) -> tuple[float, dict[str, float]]:
    """Return CPU seconds used so far by the trees under ``roots``, and by each service's processes."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu(pid: int) -> tuple[str, float]:
        stat = Path(f"/proc/{pid}/stat").read_text()
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        return comm, (int(fields[11]) + int(fields[12])) / tick

    worker = 0.0
    for pid in process_tree(roots):
        with contextlib.suppress(OSError, ValueError, IndexError):
            worker += cpu(pid)[1]
    services: dict[str, float] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                comm, seconds = cpu(int(entry.name))
                if comm in SERVICES:
                    services[SERVICES[comm]] = services.get(SERVICES[comm], 0.0) + seconds
    return worker, services


def tree_memory(roots: list[int]) -> dict[str, Any]:
    """Sum RSS and PSS (MiB) over the process trees under ``roots``."""
    rss = pss = 0
    pids = process_tree(roots)
    counted = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss += next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
            )
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            pss += next(
                int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")
            )
            counted += 1
        except (OSError, StopIteration):
            continue
    return {"rss_mb": rss / 1024, "pss_mb": pss / 1024, "processes": counted}


# -- one scenario ----------------------------------------------------------------------------------
def prepare(ctx: Context, sc: Scenario, env: dict[str, str]) -> None:
    clean_broker(sc)
    needs_django_db = sc.system == "tq" or (sc.system == "celery" and sc.results)
    if needs_django_db:
        if sc.broker == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{ctx.sqlite_path}{suffix}").unlink()
        else:
            recreate_pg(PG_DB)
        run_driver(ctx, sc, env, "setup", 120)
    if sc.system == "procrastinate":
        recreate_pg(PG_PROCRASTINATE_DB)
        run_driver(ctx, sc, env, "setup", 120)


def run_scenario(ctx: Context, sc: Scenario, workloads: set[str]) -> dict[str, Any]:
    args = ctx.args
    n = args.results_n if sc.results else args.n
    row: dict[str, Any] = {
        "key": sc.key,
        "label": sc.label,
        "broker": sc.broker,
        "system": sc.system,
        "results": sc.results,
        "n": n,
    }
    record_dir = Path(tempfile.mkdtemp(prefix=f"rec-{sc.system}-", dir=ctx.workdir))
    env = ctx.env(sc, record_dir)
    row["loadavg_before"] = os.getloadavg()[0]
    print(f"\n== {sc.label}  (N={n}; load average {row['loadavg_before']:.2f})", flush=True)
    prepare(ctx, sc, env)

    enq = run_driver(ctx, sc, env, "enqueue", 60 + n / 50 * args.timeout_scale, "--n", str(n))
    row["enqueue_rate"] = enq["rate"]
    print(f"   enqueue: {n} in {enq['seconds']:.2f}s = {enq['rate']:,.0f}/s", flush=True)
    if workloads <= {"enqueue"}:
        return row

    recorder = Recorder(record_dir)
    log_path = ctx.workdir / f"worker-{sc.key.replace('/', '-')}.log"
    spawned = time.time()
    group = WorkerGroup(worker_commands(sc), env, log_path)
    try:
        deadline = time.monotonic() + (30 + n / 50) * args.timeout_scale
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
            f"   drain: {n} in {d[-1] - d[0]:.2f}s = {row['drain_rate']:,.0f}/s "
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
                ctx,
                sc,
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


# -- report ----------------------------------------------------------------------------------------
def fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return format(value, spec)


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return "—"
    return f"{a / b:.2f}×"  # noqa: RUF001


def cell(row: dict[str, Any] | None, key: str, spec: str = ",.0f") -> str:
    if row is None:
        return "—"
    if key in ("drain_rate", "drain_rate_from_start") and row.get("drain_status"):
        return row["drain_status"]
    if key in ("p50_ms", "p99_ms") and row.get("latency_status"):
        return "timeout"
    if row.get("error") and key not in row:
        return "error"
    return fmt(row.get(key), spec)


COLUMNS = [
    ("enqueue /s", "enqueue_rate", ",.0f"),
    ("drain /s", "drain_rate", ",.0f"),
    ("drain /s from start", "drain_rate_from_start", ",.0f"),
    ("start→first s", "start_to_first_s", ".2f"),
    ("p50 ms", "p50_ms", ".2f"),
    ("p99 ms", "p99_ms", ".2f"),
    ("worker CPU µs/task", "worker_cpu_us", ",.0f"),
    ("server CPU µs/task", "service_cpu_us", ",.0f"),
    ("RSS MiB", "rss_mb", ",.0f"),
    ("PSS MiB", "pss_mb", ",.0f"),
]


def report(rows: list[dict[str, Any]], skipped: list[tuple[str, str]]) -> str:
    by_key = {row["key"]: row for row in rows}
    out = [
        "| system | " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for broker in BROKER_TITLES:
        tq = by_key.get(f"{broker}/tq")
        peer_name = PEERS[broker]
        peer = by_key.get(f"{broker}/{peer_name}") if peer_name else None
        for row in (tq, peer):
            if row is not None:
                out.append(
                    f"| {row['label']} | "
                    + " | ".join(cell(row, k, s) for _, k, s in COLUMNS)
                    + " |"
                )
        if tq is not None and peer is not None:
            cells = [ratio(tq.get(k), peer.get(k)) for _, k, _ in COLUMNS]
            out.append(f"| *ratio django_tq / {peer['label']}* | " + " | ".join(cells) + " |")
    result_rows = [row for row in rows if row["results"]]
    if result_rows:
        out += [
            "",
            "Drain with results stored in PostgreSQL (django_tq defaults: TRACK_ENQUEUED, TRACK_STARTED, django-db):",
            "",
        ]
        out += [
            "| system | N | enqueue /s | drain /s | drain /s from start |",
            "|---|---|---|---|---|",
        ]
        for broker in BROKER_TITLES:
            tq = by_key.get(f"{broker}/tq/results")
            celery = by_key.get(f"{broker}/celery/results")
            for row in (tq, celery):
                if row is not None:
                    out.append(
                        f"| {row['label']} | {row['n']} | {cell(row, 'enqueue_rate')} | {cell(row, 'drain_rate')} | "
                        f"{cell(row, 'drain_rate_from_start')} |"
                    )
            if tq is not None and celery is not None:
                out.append(
                    f"| *ratio django_tq / Celery* | | {ratio(tq.get('enqueue_rate'), celery.get('enqueue_rate'))} | "
                    f"{ratio(tq.get('drain_rate'), celery.get('drain_rate'))} | "
                    f"{ratio(tq.get('drain_rate_from_start'), celery.get('drain_rate_from_start'))} |"
                )
    notes = []
    for row in rows:
        problems = []
        if row.get("duplicates"):
            problems.append(f"{row['duplicates']} duplicate deliveries")
        if row.get("db_locked_errors"):
            problems.append(f"{row['db_locked_errors']} 'database is locked' errors")
        if row.get("worker_errors"):
            problems.append(f"{row['worker_errors']} error lines in the worker log")
        if row.get("error"):
            problems.append(f"error: {row['error']}")
        if row.get("other_load_cores", 0) > 0.25:
            problems.append(
                f"other processes used {row['other_load_cores']:.2f} cores during the drain (figures disturbed)"
            )
        if row.get("stop") == "killed":
            problems.append("worker did not stop within 15 s of SIGTERM (killed)")
        if problems:
            notes.append(f"* {row['label']}: " + "; ".join(problems))
    for label, reason in skipped:
        notes.append(f"* skipped {label}: {reason}")
    if notes:
        out += ["", *notes]
    out += ["", *bars(by_key)]
    return "\n".join(out)


def bars(by_key: dict[str, dict[str, Any]]) -> list[str]:
    """Check the current issue bar and the SPEC §12 targets that this run can measure."""
    lines = ["Issue bar (now) and SPEC §12 targets:", ""]

    def check(
        name: str,
        value: Any,
        bar: float | None,
        target: float | None,
        unit: str = "×",  # noqa: RUF001
        lower: bool = False,
    ) -> None:
        if not isinstance(value, int | float):
            lines.append(f"* {name}: not measured")
            return
        sign = "≤" if lower else "≥"
        ok = (lambda b: value <= b) if lower else (lambda b: value >= b)
        parts = []
        if bar is not None:
            parts.append(f"issue bar {sign} {bar:g}{unit}: {'MET' if ok(bar) else 'MISSED'}")
        if target is not None:
            parts.append(
                f"SPEC target {sign} {target:g}{unit}: {'met' if ok(target) else 'not yet'}"
            )
        lines.append(f"* {name}: {value:,.2f}{unit} — " + "; ".join(parts))

    def r(a: str, b: str, key: str) -> float | None:
        x, y = by_key.get(a, {}).get(key), by_key.get(b, {}).get(key)
        return x / y if isinstance(x, int | float) and isinstance(y, int | float) and y else None

    check("Redis enqueue, django_tq / Celery", r("redis/tq", "redis/celery", "enqueue_rate"), 2, 3)
    check("Redis drain, django_tq / Celery", r("redis/tq", "redis/celery", "drain_rate"), 2, 3)
    check(
        "django:// PostgreSQL drain, django_tq / Procrastinate",
        r("postgres/tq", "postgres/procrastinate", "drain_rate"),
        1,
        5,
    )
    check(
        "django:// SQLite drain", by_key.get("sqlite/tq", {}).get("drain_rate"), 500, 500, unit="/s"
    )
    check(
        "RabbitMQ enqueue, django_tq / Celery",
        r("amqp/tq", "amqp/celery", "enqueue_rate"),
        None,
        1.5,
    )
    for broker in ("redis", "amqp"):
        check(
            f"drain with results in PostgreSQL ({BROKER_TITLES[broker]}), django_tq / Celery + django-celery-results",
            r(f"{broker}/tq/results", f"{broker}/celery/results", "drain_rate"),
            None,
            10,
        )
    for broker, target in (("redis", 1.0), ("postgres", 2.0)):
        check(
            f"{BROKER_TITLES[broker]} latency p50 (django_tq)",
            by_key.get(f"{broker}/tq", {}).get("p50_ms"),
            None,
            target,
            unit=" ms",
            lower=True,
        )
    check(
        "Redis latency p99 (django_tq)",
        by_key.get("redis/tq", {}).get("p99_ms"),
        None,
        2.0,
        unit=" ms",
        lower=True,
    )
    for broker in ("redis", "amqp"):
        check(
            f"worker RSS on {BROKER_TITLES[broker]}, django_tq / Celery",
            r(f"{broker}/tq", f"{broker}/celery", "rss_mb"),
            None,
            0.7,
            lower=True,
        )
    for key, row in by_key.items():
        if key.endswith("/tq") and row.get("start_to_first_s") is not None:
            check(
                f"start→first task, {row['label']}",
                row["start_to_first_s"],
                None,
                0.5,
                unit=" s",
                lower=True,
            )
    lines.append(
        "* not covered here: RabbitMQ drain vs Dramatiq, 100k-backlog claim latency, 30-minute soak"
    )
    return lines


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
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for name in (
        "django",
        "kombu",
        "celery",
        "procrastinate",
        "redis",
        "psycopg",
        "amqp",
        "billiard",
    ):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions.append(f"{name} {version(name)}")
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}; "
        + ", ".join(versions)
    )


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-n",
        type=int,
        default=None,
        help="tasks to enqueue and drain (default 10,000; --quick 2,000)",
    )
    parser.add_argument("--quick", action="store_true", help="N=2,000 and 100 latency probes")
    parser.add_argument(
        "--brokers",
        default="redis,amqp,postgres,sqlite",
        help="comma-separated: redis, amqp, postgres, sqlite",
    )
    parser.add_argument(
        "--systems",
        default="tq,celery,procrastinate",
        help="comma-separated: tq, celery, procrastinate",
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {', '.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--results-brokers", default="redis,amqp,postgres", help="brokers for the results-on drain"
    )
    parser.add_argument(
        "--results-n", type=int, default=None, help="tasks for the results-on drain (default N/5)"
    )
    parser.add_argument(
        "--latency-n", type=int, default=None, help="latency probes (default 300; --quick 100)"
    )
    parser.add_argument(
        "--latency-interval", type=float, default=0.01, help="seconds between latency probes"
    )
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every deadline")
    parser.add_argument(
        "--json", help="also write the rows as JSON here (default benchmarks/results/<time>.json)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (worker logs, probe files)"
    )
    args = parser.parse_args(argv)
    args.n = args.n or (2_000 if args.quick else 10_000)
    args.results_n = args.results_n or max(200, args.n // 5)
    args.latency_n = args.latency_n or (100 if args.quick else 300)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    systems = {s.strip() for s in args.systems.split(",") if s.strip()}
    workloads = {w.strip() for w in args.workloads.split(",") if w.strip()}
    unknown = (
        (set(brokers) - set(BROKER_TITLES))
        | (systems - {"tq", "celery", "procrastinate"})
        | (workloads - set(WORKLOADS))
    )
    if unknown:
        print(f"unknown choice(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    scenarios: list[Scenario] = []
    for broker in brokers:
        for system in ("tq", PEERS[broker]):
            if system and system in systems:
                scenarios.append(Scenario(broker, system))
    if "results" in workloads:
        for broker in [b.strip() for b in args.results_brokers.split(",")]:
            if broker not in brokers:
                continue
            for system in ("tq", "celery") if broker in ("redis", "amqp") else ("tq",):
                if system in systems:
                    scenarios.append(Scenario(broker, system, results=True))

    workdir = Path(tempfile.mkdtemp(prefix="tq-bench-"))
    ctx = Context(args, workdir)
    started = time.monotonic()
    started_at = f"{dt.datetime.now():%Y-%m-%d %H:%M}"
    print(f"django_tq benchmark — {started_at} — N={args.n} — {machine()}")
    git_at_start = git_state()  # the work tree may change under a long run: say what it started on
    print(f"django_tq at {git_at_start}; work directory: {workdir}")
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    down = {
        b: service_up(b)
        for b in set(brokers) | ({"postgres"} if brokers else set())
        if b != "sqlite"
    }
    for sc in scenarios:
        needs_pg = sc.broker == "postgres" or sc.system in ("tq", "procrastinate") or sc.results
        reason = (
            skip_reason(sc)
            or down.get(sc.broker)
            or (down.get("postgres") if needs_pg and sc.broker != "sqlite" else None)
        )
        if reason:
            skipped.append((sc.label, reason))
            print(f"\n== {sc.label}: skipped ({reason})", flush=True)
            continue
        try:
            rows.append(run_scenario(ctx, sc, workloads))
        except Exception as exc:  # one broken scenario must not lose the others
            status = "timeout" if isinstance(exc, BenchTimeout) else "error"
            print(f"   {status}: {exc}", flush=True)
            rows.append(
                {
                    "key": sc.key,
                    "label": sc.label,
                    "broker": sc.broker,
                    "system": sc.system,
                    "results": sc.results,
                    "error": f"{status}: {exc}",
                }
            )
    drop_pg(PG_DB)
    drop_pg(PG_PROCRASTINATE_DB)

    print(
        f"\n## Results (N={args.n}, {args.latency_n} latency probes, {time.monotonic() - started:.0f}s)\n"
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
                "started": started_at,
                "machine": machine(),
                "git_at_start": git_at_start,
                "git_at_end": git_state(),
                "rows": rows,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nrows written to {out}")
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
