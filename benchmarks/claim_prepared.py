"""The ``django://`` PostgreSQL claim, prepared (this channel's path) against unprepared (through
Django's cursor, as before 2026-12-07), in one process, in alternating blocks.

    .venv/bin/python -m benchmarks.claim_prepared [--blocks 10] [--size 200]

Needs the benchmark database (``BENCH_PG_NAME``, default ``tq_bench_claim_prepared``; created and migrated
here). Each iteration publishes one message, then times the claim that takes it (carrying the
last iteration's queued ack) and the empty claim after it, as an idle worker's latency path runs
them. Prints one JSON line per side: p50/p99 of both claims (ms) and the client's CPU per claim
(µs, ``time.process_time``). Blocks alternate ``unprepared``/``prepared`` so that the machine's
load falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

QUEUE = "claim_prepared"


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    os.environ.setdefault("BENCH_PG_NAME", "tq_bench_claim_prepared")
    import psycopg

    name = os.environ["BENCH_PG_NAME"]
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            c.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def run(blocks: int, size: int) -> dict[str, dict[str, float]]:
    setup()
    from django_tq.broker import get_broker
    from django_tq.transport.database import Channel

    sides: dict[str, dict[str, list[float]]] = {
        side: {"full": [], "empty": [], "cpu": []} for side in ("unprepared", "prepared")
    }
    message: dict[str, Any] = {"body": "x", "properties": {}, "headers": {}}
    with get_broker().connection() as conn:
        channel = conn.default_channel
        prepared = Channel._execute_prepared
        for block in range(2 * blocks):
            side = ("unprepared", "prepared")[block % 2]
            if side == "unprepared":
                channel._execute_prepared = channel._execute
            else:
                channel._execute_prepared = prepared.__get__(channel)
            for index in range(size):
                channel._put(QUEUE, message)
                cpu = time.process_time()
                started = time.perf_counter()
                got = channel._claim(QUEUE, 1)
                claimed = time.perf_counter()
                empty = channel._claim(QUEUE, 1)
                done = time.perf_counter()
                cpu = time.process_time() - cpu
                assert len(got) == 1 and not empty
                channel.ack_leases([got[0]["properties"]["delivery_tag"]])
                if index >= 10:  # the block's first claims prepare or replan
                    figures = sides[side]
                    figures["full"].append(claimed - started)
                    figures["empty"].append(done - claimed)
                    figures["cpu"].append(cpu / 2)
        channel.flush_acks()

    def pct(values: list[float], p: float) -> float:
        return round(sorted(values)[int(p * (len(values) - 1))] * 1000, 3)

    return {
        side: {
            "claim_p50_ms": pct(f["full"], 0.5),
            "claim_p99_ms": pct(f["full"], 0.99),
            "empty_claim_p50_ms": pct(f["empty"], 0.5),
            "client_cpu_us_per_claim": round(statistics.mean(f["cpu"]) * 1e6, 1),
        }
        for side, f in sides.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.claim_prepared")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--size", type=int, default=200)
    args = parser.parse_args(argv)
    for side, figures in run(args.blocks, args.size).items():
        print(side, json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
