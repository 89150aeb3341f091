"""The scale benchmark's backlog: filled through django_tq's own publish path, claimed as a worker does."""

from __future__ import annotations

import pytest
from django.db import connection

from benchmarks import backlog
from benchmarks.scale import parse_args, table
from django_tq.models import QueueMessage
from django_tq.transport.database import Channel

pytestmark = pytest.mark.db


@pytest.mark.django_db(transaction=True)
def test_a_filled_backlog_is_what_a_worker_claims_and_the_claims_ack_it(settings) -> None:
    settings.TQ = {**settings.TQ, "BROKER_URL": "django://"}
    filled = backlog.fill(30, queues=3)
    assert filled["depth"] == 30
    names = backlog.queue_names(3)
    assert {q: QueueMessage.objects.filter(queue=q).count() for q in names} == dict.fromkeys(
        names, 10
    )
    claimed = QueueMessage.objects.filter(queue=names[0]).first()
    assert claimed is not None
    raw = Channel._payload(Channel.__new__(Channel), claimed.id, claimed.payload, 1)
    assert raw["headers"]["task"] == "bench.noop" and raw["headers"]["id"]

    backlog.fill(16, queues=0)  # the default queue, the claims': 4 untimed, 3 x 4 timed
    timed = backlog.claims(3, limit=4)
    assert timed["empty"] == 0 and timed["p99_ms"] >= timed["p50_ms"] > 0
    assert QueueMessage.objects.filter(queue=backlog.queue_names(0)[0]).count() == 0  # acked
    if connection.vendor == "postgresql":  # the claim's plan: through the claim index
        assert "tq_queue_claim" in timed["plan"] and timed["server_ms"] > 0
    else:
        assert "plan" not in timed


def test_the_scale_options_refuse_a_backlog_the_claims_would_empty() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--backlogs", "1000", "--claims", "500"])
    with pytest.raises(SystemExit):
        parse_args(["--brokers", "amqp"])
    args = parse_args(["--backlogs", "100_000,1000000", "--queues", "1,10"])
    assert args.backlogs == [100_000, 1_000_000] and args.queues == [1, 10]


def test_the_table_shows_every_part() -> None:
    rows = [
        {"part": "backlog", "broker": "redis", "backlog": 100_000, "fill_rate": 9000.0,
         "claim_p50_ms": 0.2, "claim_p99_ms": 0.9, "claim_max_ms": 3.0, "rate": 2000.0,
         "cpu_us": 300.0, "rss_mb": 150.0, "loadavg": 1.0},
        {"part": "queues", "broker": "postgres", "setting": 100, "status": "timeout",
         "loadavg": 2.0},
    ]  # fmt: skip
    text = table(rows)
    assert (
        "| redis:// | 100,000 | 9,000 | 0.20 ms | 0.90 ms | 3.0 ms | — | 2,000 | 300 | 150 MiB |"
        in text
    )
    assert "| django:// PostgreSQL | 100 | — (timeout) |" in text
