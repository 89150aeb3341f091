"""What recording results costs a task in one process: enqueue and drain, µs and statements.

    TQ_TEST_DB=postgres TQ_TEST_DB_NAME=<db> TQ_SETTINGS_JSON='{"BROKER_URL": "redis://…"}' \\
        .venv/bin/python -m benchmarks.result_writes -n 300 --rounds 3

Runs with ``tests.settings`` (connections kept across tasks with health checks, as in a
worker) against an existing, migrated database (``--migrate`` migrates it
first). Each round enqueues ``n`` no-op tasks one by one (``add.delay``), then drains them with
the worker's own consumer in this thread (``run_worker_until_empty``: claim, execute, record,
ack), once with results at the defaults (``django-db``, ``TRACK_ENQUEUED``, ``TRACK_STARTED``)
and once with ``RESULT_BACKEND = None``. Prints, per task: wall µs, process CPU µs, and the
statements sent on the results' connection. CPU per task is the figure to compare across runs
on a shared machine; wall time moves with the load.
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.in_process import setup_django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--migrate", action="store_true")
    args = parser.parse_args()

    setup_django(migrate=args.migrate)
    from django.conf import settings
    from django.db import connection

    import django_tq
    from django_tq.broker import get_broker
    from django_tq.conf import tq_settings
    from django_tq.testing import run_worker_until_empty
    from tests.testapp.tasks import add

    statements = [0]

    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        statements[0] += 1
        return execute(sql, params, many, context)

    base = dict(settings.TQ)
    print(
        f"# django_tq from {os.path.dirname(django_tq.__file__)}, {connection.vendor}, "
        f"broker {base.get('BROKER_URL')}"
    )
    for results in ("django-db", None):
        settings.TQ = {**base, "RESULT_BACKEND": results}
        tq_settings.reload()
        get_broker().purge([tq_settings.DEFAULT_QUEUE])
        run_worker_until_empty()
        rows = []
        for _ in range(args.rounds):
            with connection.execute_wrapper(count):
                statements[0] = 0
                w0, c0 = time.perf_counter(), time.process_time()
                for i in range(args.n):
                    add.delay(i, 1)
                w1, c1 = time.perf_counter(), time.process_time()
                enq = statements[0]
                statements[0] = 0
                ran = run_worker_until_empty()
                w2, c2 = time.perf_counter(), time.process_time()
                assert ran == args.n, ran
                rows.append(
                    (
                        (w1 - w0) / args.n * 1e6,
                        (c1 - c0) / args.n * 1e6,
                        (w2 - w1) / args.n * 1e6,
                        (c2 - c1) / args.n * 1e6,
                        enq / args.n,
                        statements[0] / args.n,
                    )
                )
        med = [sorted(col)[len(col) // 2] for col in zip(*rows, strict=True)]
        print(
            f"results={results!s:9} enqueue wall {med[0]:7.0f} µs cpu {med[1]:6.0f} µs "
            f"stmts {med[4]:.2f} | drain wall {med[2]:7.0f} µs cpu {med[3]:6.0f} µs "
            f"stmts {med[5]:.2f}"
        )


if __name__ == "__main__":
    main()
