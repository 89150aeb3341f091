"""The Procrastinate side of the benchmark (PostgreSQL): the same task body, a sync task.

``$BENCH_PROCRASTINATE_DSN`` names the database (its schema is applied by the orchestrator).
"""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

from benchmarks import namespace
from benchmarks.probe import record

app = App(
    connector=PsycopgConnector(
        conninfo=os.environ.get(
            "BENCH_PROCRASTINATE_DSN",
            f"postgresql://postgres@127.0.0.1:5432/{namespace.PG_PROCRASTINATE_DB}",
        )
    )
)


@app.task(name="bench.noop", queue="procrastinate_bench")
def noop(phase: str = "d", sent: float = 0.0) -> None:
    record(phase, sent)
