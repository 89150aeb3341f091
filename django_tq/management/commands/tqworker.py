"""``python manage.py tqworker``: run a worker (parse options, build a Worker, run it)."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_tq.beat.scheduler import Scheduler
from django_tq.broker import get_broker
from django_tq.conf import POOLS, tq_settings
from django_tq.queue_names import worker_queues
from django_tq.worker.worker import Worker, WorkerConfig, default_hostname


def configure_logging(level: str) -> None:
    """Send django_tq's log records to stderr at ``level`` unless logging is configured for it."""
    logger = logging.getLogger("django_tq")
    logger.setLevel(level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
        )
        logger.addHandler(handler)


class Command(BaseCommand):
    help = "Run a django_tq worker: consume tasks from the broker and run them."
    requires_system_checks = ["django_tq"]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-Q",
            "--queues",
            help="comma-separated queues (default: TQ['WORKER_QUEUES'], else TQ['DEFAULT_QUEUE'])",
        )
        parser.add_argument(
            "-c", "--concurrency", type=int, help="consumers (default: TQ['WORKER_CONCURRENCY'])"
        )
        parser.add_argument("-P", "--pool", choices=POOLS, help="pool (default: TQ['WORKER_POOL'])")
        parser.add_argument("-n", "--hostname", help="worker name (default: tq-<pid>@<host>)")
        parser.add_argument("-l", "--loglevel", default="info", help="log level (default: info)")
        parser.add_argument(
            "--prefetch-multiplier", type=int, help="messages each consumer holds at once"
        )
        parser.add_argument(
            "--max-tasks-per-child", type=int, help="restart a consumer after N tasks"
        )
        parser.add_argument(
            "--max-memory-per-child",
            type=int,
            metavar="KiB",
            help="replace a prefork child whose resident memory exceeds KiB after a task",
        )
        parser.add_argument(
            "--purge", action="store_true", help="delete waiting messages before starting"
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            help="serve Prometheus metrics on this port (default: TQ['METRICS_PORT'], else off)",
        )
        parser.add_argument(
            "--metrics-address",
            help="address the metrics port listens on (default: TQ['METRICS_ADDRESS'])",
        )
        parser.add_argument(
            "-B", "--beat", action="store_true", help="also run beat (in a thread of this process)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(options["loglevel"])
        queues = tuple(
            q.strip()
            for q in (options["queues"] or ",".join(worker_queues())).split(",")
            if q.strip()
        )
        config = WorkerConfig(
            queues=queues,
            concurrency=options["concurrency"] or tq_settings.WORKER_CONCURRENCY,
            pool=options["pool"] or tq_settings.WORKER_POOL,
            hostname=options["hostname"] or default_hostname(),
            prefetch_multiplier=options["prefetch_multiplier"]
            or tq_settings.WORKER_PREFETCH_MULTIPLIER,
            max_tasks_per_child=options["max_tasks_per_child"]
            or tq_settings.WORKER_MAX_TASKS_PER_CHILD,
            max_memory_per_child=options["max_memory_per_child"]
            or tq_settings.WORKER_MAX_MEMORY_PER_CHILD,
            purge=options["purge"],
            metrics_port=options["metrics_port"]
            if options["metrics_port"] is not None
            else tq_settings.METRICS_PORT,
            metrics_address=options["metrics_address"] or tq_settings.METRICS_ADDRESS,
        )
        worker = Worker(get_broker(), config)
        if not options["beat"]:
            sys.exit(worker.run())
        scheduler = Scheduler(name=f"{config.hostname}-beat")
        beat = threading.Thread(target=scheduler.run, name="django_tq-beat", daemon=True)
        beat.start()
        code = worker.run()
        scheduler.stop()
        beat.join(10)
        sys.exit(code)
