"""The worker parent's side of remote control: read commands from the mailbox, answer them.

The worker calls :meth:`ControlServer.tick` once a tick (about twice a second), in its parent
process, so a worker whose every child is busy still answers. Each command name is a method
``do_<name>(**arguments)`` returning a JSON-able reply; an unknown name or bad arguments get
``{"error": …}``, never an exception in the worker.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.utils import timezone

from django_tq import mailbox
from django_tq import message as wire_format
from django_tq.conf import DEFAULTS, tq_settings
from django_tq.models import TaskResult
from django_tq.registry import registry
from django_tq.routing import QUEUE_NAME
from django_tq.worker import inventory

if TYPE_CHECKING:
    from django_tq.worker.worker import Worker

logger = logging.getLogger("django_tq.control")

#: seconds the parent waits for its consumers to say what they hold (``reserved``, ``scheduled``)
HOLDINGS_TIMEOUT = 1.0
#: settings ``conf`` never shows
SECRET_SETTINGS = frozenset({"BROKER_URL", "METRICS_TOKEN"})


def _rss_kib(pid: int) -> int | None:
    """Return the resident memory of process ``pid`` in KiB (Linux), or None."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _queue_name(value: Any) -> str:
    name = str(value)
    if not QUEUE_NAME.fullmatch(name):
        raise ValueError(f"not a queue name: {name!r}")
    return name


class ControlServer:
    """Answers the commands addressed to ``worker``."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.inbox = mailbox.Inbox(worker.hostname, worker.broker)
        self.started = time.monotonic()

    def tick(self, now: float) -> int:
        """Run and answer the commands that arrived; return how many."""
        commands = self.inbox.poll()
        for command in commands:
            handler: Callable[..., Any] | None = getattr(self, f"do_{command.name}", None)
            try:
                if handler is None:
                    raise LookupError(f"unknown command {command.name!r}")
                reply = handler(**command.arguments)
            except (LookupError, TypeError, ValueError) as exc:
                reply = {"error": str(exc)}
            logger.debug("Control command %s from %s: %r", command.name, command.sender, reply)
            self.inbox.reply(command, reply)
            after = getattr(self, f"after_{command.name}", None)
            if after is not None and "error" not in (reply if isinstance(reply, dict) else {}):
                after(**command.arguments)  # e.g. shutdown: stop once the reply is stored
        return len(commands)

    def close(self) -> None:
        """Stop listening for commands."""
        self.inbox.close()

    # -- inspect ------------------------------------------------------------------------------
    def do_ping(self) -> str:
        return "pong"

    def do_active(self) -> list[dict[str, Any]]:
        running = self.worker.pool.running()
        rows: dict[str, dict[str, Any]] = {
            row["task_id"]: dict(row)
            for row in TaskResult.objects.filter(task_id__in=[r.task_id for r in running]).values(
                "task_id", "args", "kwargs", "date_started"
            )
        }
        now = timezone.now()
        active = []
        for task in running:
            row: dict[str, Any] = rows.get(task.task_id, {})
            started = row.get("date_started")
            active.append(
                {
                    "id": task.task_id,
                    "name": task.task_name,
                    "args": wire_format.shorten(row.get("args")),
                    "kwargs": wire_format.shorten(row.get("kwargs")),
                    "worker": self.worker.hostname,
                    "pid": task.pid,
                    "started": started.isoformat() if started else None,
                    "runtime": round((now - started).total_seconds(), 3) if started else None,
                }
            )
        return active

    def do_reserved(self) -> list[dict[str, Any]]:
        return self._held("reserved")

    def do_scheduled(self) -> list[dict[str, Any]]:
        return self._held("scheduled")

    def _held(self, kind: str) -> list[dict[str, Any]]:
        """Ask every consumer what it holds; return the ``kind`` messages, each with its pid."""
        answers, silent = self.worker.pool.holdings(HOLDINGS_TIMEOUT)
        for index, pid in silent:
            logger.warning(
                "Consumer %d (pid %d) did not say what it holds within %gs: %s leaves it out",
                index,
                pid,
                HOLDINGS_TIMEOUT,
                kind,
            )
        held = []
        for _, pid, raw in answers:
            answer = inventory.read(raw)
            if answer.get("left_off"):
                logger.info(
                    "Consumer pid %d holds %s more message(s) than its answer can list",
                    pid,
                    answer["left_off"],
                )
            held += [
                {**entry, "worker": self.worker.hostname, "pid": pid}
                for entry in answer.get(kind, [])
                if isinstance(entry, dict)
            ]
        return held

    def do_registered(self) -> list[str]:
        return sorted(registry)

    def do_revoked(self) -> list[str]:
        return sorted(self.worker.revocations.ids)

    def do_active_queues(self) -> list[str]:
        return list(self.worker.config.queues)

    def do_stats(self) -> dict[str, Any]:
        worker, pool = self.worker, self.worker.pool
        running = {task.index: task.task_id for task in pool.running()}
        children = [
            {"index": index, "pid": pid, "rss_kib": _rss_kib(pid), "running": running.get(index)}
            for index, pid in pool.child_processes()
        ]
        return {
            "hostname": worker.hostname,
            "pid": os.getpid(),
            "pool": pool.name,
            "concurrency": pool.concurrency,
            "autoscale": list(worker.config.autoscale) if worker.config.autoscale else None,
            "processed": pool.processed(),
            "uptime": round(time.monotonic() - self.started, 1),
            "rss_kib": _rss_kib(os.getpid()),
            "children": children,
            "prefetch_multiplier": worker.config.prefetch_multiplier,
            "queues": list(worker.config.queues),
            "broker": {"url": worker.broker.safe_url, "ok": self._broker_ok()},
            "database": {"vendor": connection.vendor, "ok": True},  # it answered this command
        }

    def _broker_ok(self) -> bool:
        try:
            self.worker.broker.depth(self.worker.config.queues[0])
        except Exception:  # the answer is the state: unreachable
            return False
        return True

    def do_conf(self) -> dict[str, Any]:
        values = {}
        for name in sorted(DEFAULTS):
            if name in SECRET_SETTINGS:
                continue
            value = getattr(tq_settings, name)
            values[name] = (
                value if isinstance(value, str | int | float | bool | None) else str(value)
            )
        values["BROKER_URL"] = self.worker.broker.safe_url
        return values

    # -- control ------------------------------------------------------------------------------
    def do_shutdown(self) -> dict[str, str]:
        return {"ok": "warm shutdown: running tasks finish first"}

    def after_shutdown(self) -> None:
        logger.info("Warm shutdown asked by remote control")
        self.worker.request_stop()

    def do_add_consumer(self, queue: str) -> dict[str, Any]:
        queues = self.worker.config.queues
        if queue in queues:
            return {"ok": f"already consuming {queue}", "queues": list(queues)}
        return self._consume((*queues, _queue_name(queue)), f"consuming {queue}")

    def do_cancel_consumer(self, queue: str) -> dict[str, Any]:
        queues = self.worker.config.queues
        if queue not in queues:
            return {"ok": f"not consuming {queue}", "queues": list(queues)}
        if len(queues) == 1:
            raise ValueError(f"{queue} is this worker's only queue: shut it down instead")
        return self._consume(tuple(q for q in queues if q != queue), f"no longer consuming {queue}")

    def _consume(self, queues: tuple[str, ...], what: str) -> dict[str, Any]:
        self.worker.consume(queues)
        logger.info("Remote control: %s (queues %s)", what, ",".join(queues))
        return {"ok": what, "queues": list(queues)}

    def do_pool_grow(self, n: int = 1) -> dict[str, Any]:
        return self._resize(self.worker.pool.concurrency + int(n))

    def do_pool_shrink(self, n: int = 1) -> dict[str, Any]:
        return self._resize(self.worker.pool.concurrency - int(n))

    def _resize(self, size: int) -> dict[str, Any]:
        if self.worker.autoscaler is not None:
            raise ValueError("this worker autoscales (--autoscale): its size is not set by hand")
        self.worker.pool.resize(size)
        logger.info("Pool resized to %d consumers by remote control", size)
        return {"ok": f"pool size {size}", "concurrency": size}
