"""``python manage.py tqworker``: run a worker (parse options, build a Worker, run it)."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from django_tq.beat.scheduler import Scheduler
from django_tq.broker import get_broker
from django_tq.conf import POOLS, tq_settings
from django_tq.queue_names import worker_queues
from django_tq.worker.autoreload import CodeWatcher
from django_tq.worker.daemon import Pidfile, PidfileLocked, detach
from django_tq.worker.nodename import expand
from django_tq.worker.worker import Worker, WorkerConfig, default_hostname


def configure_logging(level: str, logfile: str | None = None) -> None:
    """Send django_tq's log records to stderr (or ``logfile``) at ``level``.

    Without ``logfile``, only when logging is not configured for django_tq already; a
    ``logfile`` is reopened when logrotate moves it (``WatchedFileHandler``).
    """
    logger = logging.getLogger("django_tq")
    logger.setLevel(level.upper())
    if logfile or (not logger.handlers and not logging.getLogger().handlers):
        handler: logging.Handler = (
            logging.handlers.WatchedFileHandler(logfile)
            if logfile
            else logging.StreamHandler(sys.stderr)
        )
        handler.setFormatter(
            logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
        )
        logger.addHandler(handler)


def autoscale(value: str) -> tuple[int, int]:
    """Parse ``--autoscale MAX,MIN`` (Celery's order; ``MAX`` alone means ``MAX,1``)."""
    parts = value.split(",")
    try:
        maximum, minimum = (int(parts[0]), int(parts[1]) if len(parts) > 1 else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not MAX,MIN: {value!r} (e.g. 10,2)") from None
    if len(parts) > 2 or not 1 <= minimum <= maximum:
        raise argparse.ArgumentTypeError(f"needs 1 <= MIN <= MAX: {value!r}")
    return maximum, minimum


def add_liveness_argument(parser: CommandParser) -> None:
    """``--liveness-file PATH`` (tqworker and tqbeat): see :mod:`django_tq.liveness`."""
    parser.add_argument(
        "--liveness-file",
        metavar="PATH",
        help="touch PATH at every turn of the loop, for a liveness probe "
        "(python -m django_tq.liveness PATH --max-age 30)",
    )


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
        parser.add_argument(
            "-n",
            "--hostname",
            help="worker name; %%h %%n %%d are the host, its short name, its domain "
            "(default: tq-<pid>@<host>)",
        )
        parser.add_argument("-l", "--loglevel", default="info", help="log level (default: info)")
        parser.add_argument(
            "-f",
            "--logfile",
            help="log to this file (%%n, %%h, %%p, %%i expanded) instead of stderr",
        )
        parser.add_argument(
            "--pidfile", help="write the pid here; refuse to start while it names a live worker"
        )
        parser.add_argument(
            "-D",
            "--detach",
            action="store_true",
            help="run in the background (needs --logfile; use --pidfile to find it again)",
        )
        parser.add_argument(
            "--time-limit",
            type=float,
            metavar="SECONDS",
            help="hard time limit for tasks that set none (prefork kills the child)",
        )
        parser.add_argument(
            "--soft-time-limit",
            type=float,
            metavar="SECONDS",
            help="soft time limit for tasks that set none (SoftTimeLimitExceeded in the task)",
        )
        parser.add_argument(
            "--autoscale",
            type=autoscale,
            metavar="MAX,MIN",
            help="between MIN and MAX consumers: more while messages wait, fewer when idle "
            "(prefork, threads); -c is then ignored",
        )
        parser.add_argument(
            "--autoreload",
            action="store_true",
            help="start again when the project's code changes (development)",
        )
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
            "--accept-celery",
            action="store_true",
            default=None,
            help="also run Celery protocol 2 messages published to these queues "
            "(default: TQ['ACCEPT_CELERY'])",
        )
        parser.add_argument(
            "-E",
            "--events",
            action="store_true",
            help="send live task events for tqevents (default: TQ['SEND_EVENTS'])",
        )
        parser.add_argument(
            "-B", "--beat", action="store_true", help="also run beat (in a thread of this process)"
        )
        add_liveness_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            hostname = expand(options["hostname"]) if options["hostname"] else default_hostname()
            logfile, pidfile = (
                expand(options[name], nodename=hostname) if options[name] else None
                for name in ("logfile", "pidfile")
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for name in ("time_limit", "soft_time_limit"):
            if options[name] is not None and options[name] <= 0:
                raise CommandError(f"--{name.replace('_', '-')} must be positive seconds.")
        if options["autoscale"] and (options["pool"] or tq_settings.WORKER_POOL) == "solo":
            raise CommandError("--autoscale needs the prefork or threads pool, not solo.")
        if options["detach"]:
            if not logfile:
                raise CommandError("--detach needs --logfile: a detached worker has no terminal.")
            connections.close_all()  # never fork with an open connection
            detach(output=logfile, workdir=os.getcwd())  # stray prints and crashes land there too
        configure_logging(options["loglevel"], logfile)
        lock = Pidfile(pidfile) if pidfile else None
        if lock is not None:
            try:
                lock.acquire()
            except PidfileLocked as exc:
                raise CommandError(str(exc)) from None
        try:
            worker = Worker(get_broker(), self._config(options, hostname))
            code = self._run(worker, beat=options["beat"])
        finally:
            if lock is not None:
                lock.release()
        if worker.reload_requested:
            os.execv(sys.executable, CodeWatcher.restart_arguments())
        sys.exit(code)

    def _config(self, options: dict[str, Any], hostname: str) -> WorkerConfig:
        queues = tuple(
            q.strip()
            for q in (options["queues"] or ",".join(worker_queues())).split(",")
            if q.strip()
        )
        return WorkerConfig(
            queues=queues,
            concurrency=options["concurrency"] or tq_settings.WORKER_CONCURRENCY,
            pool=options["pool"] or tq_settings.WORKER_POOL,
            hostname=hostname,
            prefetch_multiplier=options["prefetch_multiplier"]
            or tq_settings.WORKER_PREFETCH_MULTIPLIER,
            max_tasks_per_child=options["max_tasks_per_child"]
            or tq_settings.WORKER_MAX_TASKS_PER_CHILD,
            max_memory_per_child=options["max_memory_per_child"]
            or tq_settings.WORKER_MAX_MEMORY_PER_CHILD,
            purge=options["purge"],
            autoreload=options["autoreload"],
            autoscale=options["autoscale"],
            liveness_file=options["liveness_file"],
            autoscale_keepalive=tq_settings.WORKER_AUTOSCALE_KEEPALIVE,
            time_limit=options["time_limit"],
            soft_time_limit=options["soft_time_limit"],
            metrics_port=options["metrics_port"]
            if options["metrics_port"] is not None
            else tq_settings.METRICS_PORT,
            metrics_address=options["metrics_address"] or tq_settings.METRICS_ADDRESS,
            accept_celery=bool(options["accept_celery"] or tq_settings.ACCEPT_CELERY),
            events=options["events"] or tq_settings.SEND_EVENTS,
        )

    def _run(self, worker: Worker, *, beat: bool) -> int:
        if not beat:
            return worker.run()
        scheduler = Scheduler(name=f"{worker.hostname}-beat")
        thread = threading.Thread(target=scheduler.run, name="django_tq-beat", daemon=True)
        thread.start()
        code = worker.run()
        scheduler.stop()
        thread.join(10)
        return code
