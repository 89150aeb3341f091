"""The django_tq side of the benchmark: one task whose body is :func:`benchmarks.probe.record`."""

from __future__ import annotations

from benchmarks.probe import record
from django_tq import task


@task(name="bench.noop")
def noop(phase: str = "d", sent: float = 0.0) -> None:
    record(phase, sent)
