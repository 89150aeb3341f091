"""The raw ceilings: each broker driven by its client library alone, with no task queue on top.

Same task body (:func:`benchmarks.probe.record`), same completion detection, same 2 worker
processes as the task queues; what is left out is everything a task queue adds (envelopes,
routing, results, leases, signals). A task queue at a good fraction of its broker's ceiling has
little left to remove; one far below it has work to do. Each message is ``json [phase, sent]``.

* ``redis-py`` — ``LPUSH`` to publish; each worker ``BLMOVE``s one message into its own
  processing list, runs it, then ``LREM``s it (the reliable-queue pattern: a crash leaves the
  message in the processing list, nothing is lost). One round trip each, no pipelining.
* ``kombu`` — kombu's own transport for the URL, as a kombu user would write it: a durable queue,
  persistent messages, ``Producer.publish`` one by one (``BENCH_CONFIRM=1``: with publisher
  confirms, kombu's ``confirm_publish`` transport option — RabbitMQ only); a ``Consumer`` with
  prefetch 4 and one ``message.ack()`` per message after the body (on Redis that is kombu's
  Redis QoS: unacked hash and index, two MULTI/EXEC per message).
* ``pg`` — psycopg 3 on PostgreSQL, autocommit: ``INSERT`` + ``pg_notify`` in one statement to
  publish (a durable commit, as django_tq's ``django://`` publish); each worker claims and
  deletes up to 4 rows (django_tq's prefetch) in one statement, ``DELETE … WHERE id IN (SELECT
  id … ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 4) RETURNING``, on a connection with
  ``synchronous_commit = off`` (as django_tq's consumer connection), then runs the bodies (the
  rows are gone before the bodies run: at-most-once, the fastest shape, so a ceiling and not a
  design), and ``LISTEN``s with a timeout when the table is empty.

``python -m benchmarks.raw KIND`` runs one consumer on ``$BENCH_RAW_URL`` until SIGTERM;
:func:`client` is the publishing side and :func:`pg_setup` creates the table (both called by
``benchmarks.driver``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks import namespace
from benchmarks.probe import record

QUEUE = namespace.queue("raw_bench")
KINDS = ("redis-py", "kombu", "pg")
PREFETCH = 4

Send = Callable[[str, float], Any]


def url() -> str:
    return os.environ["BENCH_RAW_URL"]


def encode(phase: str, sent: float) -> str:
    return json.dumps([phase, sent])


# -- redis-py: LPUSH / BLMOVE + LREM ----------------------------------------------------------------
@contextlib.contextmanager
def redis_py_client() -> Iterator[Send]:
    import redis

    client = redis.Redis.from_url(url())
    try:
        yield lambda phase, sent: client.lpush(QUEUE, encode(phase, sent))
    finally:
        client.close()


def redis_py_worker() -> None:
    import redis

    client = redis.Redis.from_url(url())
    processing = f"{QUEUE}:processing:{os.getpid()}"
    while True:
        payload: Any = client.blmove(QUEUE, processing, 1, "RIGHT", "LEFT")
        if payload is None:
            continue
        phase, sent = json.loads(payload)
        record(phase, sent)
        client.lrem(processing, 1, payload)


# -- kombu: Producer.publish / Consumer + ack ---------------------------------------------------------
def kombu_connection(confirm: bool) -> Any:
    from kombu import Connection

    options = {"confirm_publish": True} if confirm else {}
    return Connection(url(), transport_options=options)


def kombu_queue() -> Any:
    from kombu import Queue

    return Queue(QUEUE, routing_key=QUEUE, durable=True)


@contextlib.contextmanager
def kombu_client() -> Iterator[Send]:
    with kombu_connection(os.environ.get("BENCH_CONFIRM") == "1") as conn:
        kombu_queue()(conn.default_channel).declare()
        producer = conn.Producer(serializer="json")

        def send(phase: str, sent: float) -> None:
            producer.publish([phase, sent], routing_key=QUEUE, exchange="", delivery_mode=2)

        yield send


def kombu_worker() -> None:
    def on_message(body: list[Any], message: Any) -> None:
        record(body[0], body[1])
        message.ack()

    with (
        kombu_connection(confirm=False) as conn,
        conn.Consumer(
            kombu_queue(), callbacks=[on_message], accept=["json"], prefetch_count=PREFETCH
        ),
    ):
        while True:
            with contextlib.suppress(socket.timeout, TimeoutError):
                conn.drain_events(timeout=1)


# -- psycopg: INSERT + NOTIFY / DELETE … SKIP LOCKED RETURNING ------------------------------------------
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {QUEUE} (id bigserial PRIMARY KEY, payload text NOT NULL)"
)
PUBLISH = (
    f"WITH i AS (INSERT INTO {QUEUE} (payload) VALUES (%s) RETURNING id) "
    f"SELECT pg_notify('{QUEUE}', '') FROM i"
)
CLAIM = (
    f"DELETE FROM {QUEUE} WHERE id IN "
    f"(SELECT id FROM {QUEUE} ORDER BY id FOR UPDATE SKIP LOCKED LIMIT {PREFETCH}) "
    "RETURNING id, payload"
)


def pg_connect() -> Any:
    import psycopg

    return psycopg.connect(url(), autocommit=True)


def pg_setup() -> None:
    with pg_connect() as conn:
        conn.execute(CREATE_TABLE)


@contextlib.contextmanager
def pg_client() -> Iterator[Send]:
    with pg_connect() as conn:
        yield lambda phase, sent: conn.execute(PUBLISH, (encode(phase, sent),))


def pg_worker() -> None:
    with pg_connect() as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute(f"LISTEN {QUEUE}")
        while True:
            rows = conn.execute(CLAIM).fetchall()
            if not rows:
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    pass
                continue
            for _, payload in sorted(rows):  # DELETE … RETURNING has no order: run oldest first
                phase, sent = json.loads(payload)
                record(phase, sent)


# -- entry points -----------------------------------------------------------------------------------------
CLIENTS: dict[str, Callable[[], contextlib.AbstractContextManager[Send]]] = {
    "redis-py": redis_py_client,
    "kombu": kombu_client,
    "pg": pg_client,
}
WORKERS: dict[str, Callable[[], None]] = {
    "redis-py": redis_py_worker,
    "kombu": kombu_worker,
    "pg": pg_worker,
}


def client(kind: str) -> contextlib.AbstractContextManager[Send]:
    """Return a context manager yielding ``send(phase, sent)`` for the raw ``kind``."""
    return CLIENTS[kind]()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.raw")
    parser.add_argument("kind", choices=KINDS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave the loop, close the connection
    try:
        WORKERS[args.kind]()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
