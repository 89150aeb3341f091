"""The Celery side of the benchmark: the same task body on ``$BENCH_CELERY_BROKER``.

Results off (default): no result backend and ``task_ignore_result``. ``BENCH_RESULTS=1``: results
in PostgreSQL through django-celery-results (``result_backend="django-db"``), which needs the
Django settings in ``benchmarks.settings``.
"""

from __future__ import annotations

import os

from celery import Celery

from benchmarks.probe import record

RESULTS = os.environ.get("BENCH_RESULTS") == "1"

if RESULTS:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    django.setup()

app = Celery("bench", broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/11"))
app.conf.update(
    task_default_queue="celery_bench",
    task_ignore_result=not RESULTS,
    result_backend="django-db" if RESULTS else None,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop(phase: str = "d", sent: float = 0.0) -> None:
    record(phase, sent)
