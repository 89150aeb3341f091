"""The one task body every benchmarked system runs: write one line to a per-process file.

``record(phase, sent)`` appends ``"<phase> <time.time()> <sent>\\n"`` to
``$BENCH_RECORD_DIR/rec-<pid>.log`` (line-buffered: one ``write`` syscall per task, a few µs, the
same for every system). The orchestrator reads the files to learn when each task started; the
latency workload passes ``sent = time.time()`` at enqueue, so ``start - sent`` is the
enqueue→start latency. Phases: ``d`` drain backlog, ``w`` warm-up, ``l`` latency probe.
"""

from __future__ import annotations

import os
import time

_file = None
_pid = 0


def record(phase: str = "d", sent: float = 0.0) -> None:
    """Record that a task started now (the whole "no-op" task body)."""
    global _file, _pid
    now = time.time()
    pid = os.getpid()
    if pid != _pid:  # first task in this process (or a fork inherited the parent's file)
        directory = os.environ["BENCH_RECORD_DIR"]
        _file = open(os.path.join(directory, f"rec-{pid}.log"), "a", buffering=1)  # noqa: SIM115
        _pid = pid
    _file.write(f"{phase} {now:.6f} {sent}\n")
