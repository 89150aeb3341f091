"""Fill a django_tq queue with a backlog, and time claims against it (``benchmarks/scale.py``).

``python -m benchmarks.backlog ACTION [options]`` prints one JSON object on stdout:

* ``fill --n N [--queues Q]`` — publish N no-op tasks (``bench.noop``), spread round-robin over
  Q queues (``<run's tq_bench>_0`` …; Q=0: the run's default queue), through django_tq's own
  publish path in bursts of 10,000: :func:`django_tq.enqueue.encode` for the wire format and
  :meth:`Broker.publish_many` for the store's (one pipeline of put scripts on ``redis://``,
  multi-row ``INSERT`` statements on ``django://``) — the messages a worker gets are exactly what
  ``.delay()`` would have written, without ``apply_async``'s per-call work;
* ``claims --n K [--limit 4]`` — one untimed claim, then K claims of ``limit`` messages each on the channel a worker
  uses (``_claim``: the Lua script / the ``UPDATE … SKIP LOCKED`` statement), each acked
  afterwards as a worker would; the claim alone is timed: p50, p99 and the worst, in ms; on
  PostgreSQL also the claim's plan and server time at that depth (``EXPLAIN ANALYZE``).

The tasks carry the results-off options of the benchmark (``ignore_result``), like the
``enqueue`` workload's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any

BURST = 10_000


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()


def queue_names(count: int) -> list[str]:
    """Return the queues a backlog is spread over (the run's default queue for 0)."""
    from benchmarks import namespace

    base = namespace.queue("tq_bench")
    return [base] if count == 0 else [f"{base}_{index}" for index in range(count)]


def fill(n: int, queues: int) -> dict[str, Any]:
    setup()
    from django_tq.broker import get_broker
    from django_tq.enqueue import encode
    from django_tq.message import TaskMessage
    from django_tq.outgoing import Outgoing

    broker = get_broker()
    names = queue_names(queues)
    started = time.perf_counter()
    for start in range(0, n, BURST):
        burst = []
        for index in range(start, min(n, start + BURST)):
            message = TaskMessage(
                id=str(uuid.uuid4()),
                task="bench.noop",
                args=("d", float(index)),
                queue=names[index % len(names)],
                ignore_result=True,
            )
            burst.append(Outgoing(wire=encode(message), queue=message.queue, label=message.id))
        broker.publish_many(burst)
    seconds = time.perf_counter() - started
    depth = sum(broker.depth(name) for name in names)
    return {"n": n, "queues": len(names), "seconds": seconds, "rate": n / seconds, "depth": depth}


def claims(n: int, limit: int) -> dict[str, Any]:
    setup()
    from benchmarks.processes import percentile
    from django_tq.broker import get_broker

    queue = queue_names(0)[0]
    with get_broker().connection() as conn:
        channel = conn.default_channel
        warm = channel._claim(queue, limit)  # connects, loads the script / prepares: not timed
        channel.ack_leases([raw["properties"]["delivery_tag"] for raw in warm])
        timings: list[float] = []
        empty = 0
        for _ in range(n):
            started = time.perf_counter()
            claimed = channel._claim(queue, limit)
            timings.append(time.perf_counter() - started)
            if not claimed:
                empty += 1
                continue
            channel.ack_leases([raw["properties"]["delivery_tag"] for raw in claimed])
        plan = claim_plan(channel, queue, limit)
    return {
        **plan,
        "n": n,
        "limit": limit,
        "empty": empty,
        "p50_ms": percentile(timings, 0.50) * 1000,
        "p99_ms": percentile(timings, 0.99) * 1000,
        "max_ms": max(timings) * 1000,
    }


def claim_plan(channel: Any, queue: str, limit: int) -> dict[str, Any]:
    """Return how PostgreSQL runs the ``django://`` claim at this depth (``{}`` elsewhere).

    ``EXPLAIN ANALYZE`` of the channel's own claim statement, on its own connection (its session
    settings apply), in a transaction rolled back: the scans it chose, and the server's execution
    time — the claim without the client's round trip and scheduling.
    """
    db = getattr(channel, "consumer_db", None)
    if db is None or db.vendor != "postgresql":
        return {}
    sql, params = channel.claim_statement(queue, limit)
    with db.cursor() as cursor:
        cursor.execute("BEGIN")
        try:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
            (plan,) = cursor.fetchone()
        finally:
            cursor.execute("ROLLBACK")
    top = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
    scans: list[str] = []
    nodes = [top["Plan"]]
    while nodes:
        node = nodes.pop()
        if "Scan" in node["Node Type"] or node["Node Type"] == "Sort":
            scans.append(" ".join(filter(None, (node["Node Type"], node.get("Index Name")))))
        nodes.extend(node.get("Plans", []))
    return {"plan": ", ".join(scans), "server_ms": top["Execution Time"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backlog")
    parser.add_argument("action", choices=["fill", "claims"])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--queues", type=int, default=0, help="fill: spread over this many queues")
    parser.add_argument("--limit", type=int, default=4, help="claims: messages per claim")
    args = parser.parse_args(argv)
    if args.n < 1 or args.queues < 0 or args.limit < 1:
        parser.error("--n and --limit must be at least 1, --queues at least 0")
    result = fill(args.n, args.queues) if args.action == "fill" else claims(args.n, args.limit)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
