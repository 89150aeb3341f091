"""Set up Django in a benchmark that drives django_tq in its own process (no worker spawned).

Used by the one-process micro-benchmarks (``consumer_cpu``, ``result_writes``): the test
settings, the tables if asked, and the default connection kept as a worker keeps it
(``WORKER_DB_CONN_MAX_AGE``, with health checks on).
"""

from __future__ import annotations

import os


def setup_django(*, migrate: bool) -> None:
    """``django.setup()`` with ``tests.settings`` (unless set), then a worker's connection."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if migrate:
        call_command("migrate", verbosity=0)
    connection.close()
    connection.settings_dict.update(CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=True)
