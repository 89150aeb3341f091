"""The processes the orchestrator starts, and what it reads from them (``/proc``, probe files).

:func:`run_driver` runs one ``benchmarks.driver`` action and returns its JSON; a
:class:`WorkerGroup` is one scenario's worker process(es), each in its own session and killed by
its process group; a :class:`Recorder` reads the task bodies' probe files
(``benchmarks/probe.py``); the rest sums CPU and memory over process trees.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.systems import REPO


class BenchTimeout(Exception):
    """A driver or worker did not finish within its deadline."""


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_driver(
    system: str,
    env: dict[str, str],
    action: str,
    timeout: float,
    *extra: str,
    module: str = "benchmarks.driver",
) -> dict[str, Any]:
    """Run ``benchmarks.driver`` for ``system`` (or ``module``'s ``action``, without a system:
    ``system=""``); return its JSON answer (raise on failure/timeout)."""
    cmd = [sys.executable, "-m", module, *([system] if system else []), action, *extra]
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
