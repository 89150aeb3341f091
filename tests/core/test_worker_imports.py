"""What a worker process imports: only what it runs (docs/performance.md, memory and start).

Every module imported before the fork is held by the parent and by each prefork child; one
imported after it is a private copy in every child. These tests pin the modules a worker never
uses out of ``django.setup()`` and the worker's imports, in a fresh interpreter, so they do not
creep back through a module-level import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: ``django.setup()`` of a project with django_tq, then everything ``tqworker`` imports before
#: it builds the worker (django:// broker: no Redis or AMQP client library is needed)
PROGRAM = """
import json, sys
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_tq"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    USE_TZ=True,
    TQ={"BROKER_URL": "django://"},
)
import django
django.setup()
from django.core.management import load_command_class
load_command_class("django_tq", "tqworker")
import django_tq.worker.worker, django_tq.worker.pool, django_tq.worker.consumer
from django_tq.broker import get_broker
get_broker().connection_errors
print(json.dumps(sorted(sys.modules)))
"""

#: never imported by a worker that does not use them: the crontab parser (beat, the admin and
#: the API parse crontabs), the migration autodetector (a database check), the API and the
#: admin, the metrics' and tracing's optional extras, the other brokers' client libraries
NOT_IMPORTED = (
    "croniter",
    "dateutil",
    "django.db.migrations.autodetector",
    "django.db.migrations.loader",
    "rest_framework",
    "django_tq.api",
    "django_tq.admin",
    "django.contrib.admin",
    "prometheus_client",
    "django_tq.worker.metrics",
    "opentelemetry",
    "redis",
    "redis.cluster",
    "django_tq.transport.redis",
)


@pytest.fixture(scope="module")
def worker_modules() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", NOT_IMPORTED)
def test_a_worker_does_not_import(worker_modules: set[str], module: str) -> None:
    assert module not in worker_modules


def test_the_models_and_the_worker_still_import(worker_modules: set[str]) -> None:
    # the schedules' models are there; only croniter waits for a crontab to expand
    for module in ("django_tq.models", "django_tq.schedules", "django_tq.worker.worker"):
        assert module in worker_modules


def test_a_crontab_still_expands_and_imports_croniter_then() -> None:
    program = """
import sys
from django.conf import settings
settings.configure(INSTALLED_APPS=[], USE_TZ=True)
import django
django.setup()
from django_tq.schedules import crontab
assert "croniter" not in sys.modules
schedule = crontab(minute="*/15", hour="9-17")
assert "croniter" in sys.modules
print(schedule)
"""
    out = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip()
