"""The Grafana dashboard (docs/grafana/django_tq.json) on a real Prometheus server.

Prometheus scrapes a prefork worker's ``--metrics-port`` and the Django view (bearer token) of
this test's live server every second, while waves of tasks run (some fail, one retries, one is a
dead letter, one waits on a queue nobody consumes); then every query of every panel is evaluated
through Prometheus's HTTP API and must return series with numbers, and so must the queries of
the KEDA example (docs/kubernetes/keda-scaledobject.yaml).

``TQ_DASHBOARD_PNG=docs/grafana/django_tq.png`` runs more waves and also draws the panels
(``scripts/render_dashboard``, matplotlib): the picture in docs/observability.md.
"""

from __future__ import annotations

import os
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest

from django_tq import AsyncResult, states
from django_tq.enqueue import enqueue
from django_tq.message import TaskMessage
from django_tq.models import DeadLetter
from scripts.lib import dashboard
from tests.conftest import REQUIRE_SERVICES, ROOT, wait_for
from tests.testapp.tasks import add, always_retries, fail

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TOKEN = "dashboard-scrape-token"
PICTURE = os.environ.get("TQ_DASHBOARD_PNG")
#: executions one wave counts in django_tq_tasks_total: 8 add, 1 fail, always_retries 2 RETRY + 1 FAILURE
PER_WAVE = 12


def run_wave(number: int) -> None:
    """Run one wave of tasks on the worker and wait until every one has finished."""
    results = [add.delay(i, number) for i in range(8)]
    failed = fail.delay("expected")
    retried = always_retries.delay()
    add.apply_async((0, 0), queue="reports")  # nobody consumes it: depth and head age grow
    enqueue(TaskMessage(id=str(uuid.uuid4()), task="tests.no_such_task"))  # a dead letter
    assert [r.get(timeout=30) for r in results] == [i + number for i in range(8)]
    for result in (failed, retried):
        with pytest.raises((ValueError, ConnectionError)):
            result.get(timeout=30)
    wait_for(lambda: AsyncResult(retried.id).state == states.FAILURE, what="the retries ending")
    wait_for(lambda: DeadLetter.objects.count() >= number, what="the dead letter")


def scraped(url: str, promql: str, expected: float) -> bool:
    series = dashboard.query(url, promql)
    return bool(series) and float(series[0]["value"][1]) >= expected


def test_every_query_of_the_dashboard_returns_series(
    start_worker: Any, live_server: Any, settings: Any
) -> None:
    if dashboard.binary() is None:
        message = (
            "prometheus is not installed (Debian package prometheus, scripts/lib/debian-packages)"
        )
        if REQUIRE_SERVICES:
            pytest.fail(message + " (TQ_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    settings.TQ = {**settings.TQ, "METRICS_TOKEN": TOKEN}
    metrics_port = dashboard.free_port()
    start_worker(
        "-P", "prefork", "-c", "2",
        "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1",
    )  # fmt: skip
    web = urllib.parse.urlsplit(live_server.url)
    jobs = [
        dashboard.ScrapeJob(name="django_tq_workers", targets=(f"127.0.0.1:{metrics_port}",)),
        dashboard.ScrapeJob(
            name="django_tq_cluster",
            targets=(f"127.0.0.1:{web.port}",),
            path="/tq/metrics/",
            token=TOKEN,
        ),
    ]
    board = dashboard.load()
    waves = 20 if PICTURE else 2
    with dashboard.prometheus_server(jobs) as url:
        started = time.time()
        wait_for(lambda: scraped(url, 'sum(up{job=~"django_tq_.*"})', 2), what="both targets up")
        for number in range(1, waves + 1):
            run_wave(number)
            # each wave is scraped before the next starts, so every counter moves between samples
            wait_for(
                lambda n=number: (
                    scraped(url, "sum(django_tq_tasks_total)", n * PER_WAVE)
                    and scraped(url, "sum(django_tq_dead_letters_total)", n)
                    and scraped(url, 'django_tq_queue_depth{queue="reports"}', n)
                ),
                what=f"wave {number} scraped",
            )
            if PICTURE:
                time.sleep(2)
        empty, no_numbers = [], []
        for panel in board.panels:
            for target in panel.targets:
                promql = target.promql(**board.variables)
                series = dashboard.query(url, promql)
                if not series:
                    empty.append(f"{panel.title}: {promql}")
                elif not any(dashboard.finite(s) for s in series):
                    no_numbers.append(f"{panel.title}: {promql} -> {series}")
        for promql in dashboard.scaler_queries():  # the KEDA example scales on these
            series = dashboard.query(url, promql)
            if not series:
                empty.append(f"KEDA ScaledObject: {promql}")
        assert not empty, "queries without series:\n" + "\n".join(empty)
        assert not no_numbers, "queries without a number:\n" + "\n".join(no_numbers)
        if PICTURE:
            from scripts.lib.render_dashboard import render

            render(board, url, start=started, end=time.time(), out=ROOT / Path(PICTURE))
