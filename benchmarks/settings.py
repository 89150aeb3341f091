"""Django settings for the benchmark's django_tq processes (and Celery's django-db results).

Environment:

* ``BENCH_DB`` — ``postgres`` (default; database ``$BENCH_PG_NAME``, default the run's
  ``tq_bench_<run>``, ``benchmarks/namespace.py``) or
  ``sqlite`` (file ``$BENCH_SQLITE_PATH``, WAL, ``IMMEDIATE`` transactions — the recommended setup);
* ``BENCH_TQ_BROKER`` — ``TQ["BROKER_URL"]`` (default ``django://``);
* ``BENCH_CELERY_RESULTS`` — ``1`` adds django-celery-results (Celery's results-on processes only);
* ``BENCH_TQ_TRANSPORT_OPTIONS`` — JSON for ``TQ["BROKER_TRANSPORT_OPTIONS"]`` (what-if runs);
* ``BENCH_TQ_CONFIRM`` — ``TQ["BROKER_CONFIRM"]`` (``batch``: the RabbitMQ one-by-one row of
  confirms collected in the background);
* ``BENCH_RESULTS`` — ``1`` keeps django_tq's defaults (results in the database, ``TRACK_ENQUEUED``,
  ``TRACK_STARTED``); ``redis`` the same with ``RESULT_BACKEND="django-cache"`` on a django-redis
  ``default`` cache at ``$BENCH_TQ_CACHE_URL``; otherwise ``RESULT_BACKEND=None,
  TRACK_ENQUEUED=False`` as for the peers.
"""

from __future__ import annotations

import json
import os

from benchmarks import namespace

SECRET_KEY = "django_tq-benchmark-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "django_tq",
]
if os.environ.get("BENCH_CELERY_RESULTS") == "1":  # only Celery's processes: it imports celery
    INSTALLED_APPS.append("django_celery_results")

if os.environ.get("BENCH_DB", "postgres") == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_SQLITE_PATH", "/tmp/tq_bench.sqlite3"),
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("BENCH_PG_NAME", namespace.PG_DB),
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": 5432,
        }
    }

CACHES: dict[str, dict[str, object]] = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
if os.environ.get("BENCH_RESULTS") == "redis":
    CACHES["default"] = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": os.environ.get(
            "BENCH_TQ_CACHE_URL", f"redis://127.0.0.1:{namespace.REDIS_PORT}/{namespace.REDIS_DB}"
        ),
    }

TQ: dict[str, object] = {
    "BROKER_URL": os.environ.get("BENCH_TQ_BROKER", "django://"),
    "DEFAULT_QUEUE": namespace.queue("tq_bench"),
    #: remote control's and events' exchanges of this run's own (RabbitMQ's are vhost-wide)
    "CONTROL_EXCHANGE": namespace.CONTROL_EXCHANGE,
    "IMPORTS": ["benchmarks.tq_tasks"],
}
# what-if experiments, e.g. BENCH_TQ_TRANSPORT_OPTIONS='{"confirm_publish": false}'
if os.environ.get("BENCH_TQ_TRANSPORT_OPTIONS"):
    TQ["BROKER_TRANSPORT_OPTIONS"] = json.loads(os.environ["BENCH_TQ_TRANSPORT_OPTIONS"])
if os.environ.get("BENCH_TQ_CONFIRM"):
    TQ["BROKER_CONFIRM"] = os.environ["BENCH_TQ_CONFIRM"]
if os.environ.get("BENCH_RESULTS") == "redis":
    TQ["RESULT_BACKEND"] = "django-cache"
elif os.environ.get("BENCH_RESULTS") != "1":
    TQ.update(RESULT_BACKEND=None, TRACK_ENQUEUED=False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_tq": {"handlers": ["stderr"], "level": "WARNING"}},
}
