"""The Celery side of the benchmark: the same task body on ``$BENCH_CELERY_BROKER``.

Results off (default): no result backend and ``task_ignore_result``. ``BENCH_RESULTS=1``: results
in PostgreSQL through django-celery-results (``result_backend="django-db"``), which needs the
Django settings in ``benchmarks.settings``. ``BENCH_RESULTS=redis``: Celery's Redis result backend
on the broker's Redis database (``result_backend`` = the broker URL).
"""

from __future__ import annotations

import os

from celery import Celery

from benchmarks import namespace
from benchmarks.probe import record

RESULTS = os.environ.get("BENCH_RESULTS", "0")
BROKER = os.environ.get(
    "BENCH_CELERY_BROKER", f"redis://127.0.0.1:{namespace.REDIS_PORT}/{namespace.REDIS_DB}"
)

if RESULTS == "1":
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    django.setup()

app = Celery("bench", broker=BROKER)
app.conf.update(
    task_default_queue=namespace.queue("celery_bench"),
    task_ignore_result=RESULTS not in ("1", "redis"),
    result_backend={"1": "django-db", "redis": BROKER}.get(RESULTS),
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop(phase: str = "d", sent: float = 0.0) -> None:
    record(phase, sent)
