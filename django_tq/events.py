"""Live task events: what workers do, as it happens, on the broker's fanout channel.

With ``tqworker -E`` (or ``TQ["SEND_EVENTS"]``) a worker emits Celery's events, with Celery's
names and fields: ``task-received``, ``task-started``, ``task-succeeded``, ``task-failed``,
``task-retried``, ``task-revoked`` (``uuid``, ``name``, ``hostname``, ``timestamp``, and
``args``/``kwargs`` cut to :data:`SHOWN` characters, ``runtime``, ``exception``, ``retries``…) and
``worker-online``, ``worker-heartbeat``, ``worker-offline``. They travel on the ``events``
topic of :mod:`django_tq.broker.fanout`: a fanout exchange on RabbitMQ, Pub/Sub on Redis,
``NOTIFY`` on PostgreSQL (``django://``; cut to fit its 8000 bytes), nowhere on SQLite and
MariaDB. Nobody listening costs nothing but the publish, and events are never stored: they are
for watching (``manage.py tqevents``), the database holds the history.

The task events come from the task signals (:mod:`django_tq.signals`), received in the process
that runs the task, which publishes on a connection of its own: no query, no message to the
parent. With events off no receiver is connected, so the hot path does not change.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from django_tq import signals
from django_tq.broker import Broker, get_broker
from django_tq.broker.fanout import (
    NOTIFY_LIMIT,
    Fanout,
    PostgresFanout,
    Subscriber,
    open_fanout,
    shared_fanout,
)
from django_tq.conf import tq_settings
from django_tq.outage import TRANSIENT, Outage

logger = logging.getLogger("django_tq.events")

#: the topic events travel on
TOPIC = "events"
#: characters of arguments, results and exceptions an event carries
SHOWN = 500
#: the task events, in the order a task goes through them
TASK_EVENTS = (
    "task-received",
    "task-started",
    "task-succeeded",
    "task-failed",
    "task-retried",
    "task-revoked",
)
WORKER_EVENTS = ("worker-online", "worker-heartbeat", "worker-offline")


def shorten(value: Any, limit: int = SHOWN) -> str:
    """Return ``repr(value)``, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fanout(broker: Broker, *, shared: bool) -> Fanout | None:
    prefix = tq_settings.CONTROL_EXCHANGE
    if shared:
        return shared_fanout(broker, prefix=prefix)
    return open_fanout(broker, prefix=prefix)


def supported(broker: Broker | None = None) -> bool:
    """Return whether events travel on ``broker`` (not on ``django://`` over SQLite or MariaDB)."""
    return _fanout(broker or get_broker(), shared=True) is not None


def encode(event: dict[str, Any], *, limit: int | None = None) -> str:
    """Return ``event`` as JSON of at most ``limit`` bytes (long fields are cut to fit)."""
    text = json.dumps(event, default=str)
    if limit is None or len(text.encode()) <= limit:
        return text
    event = dict(event)
    for key in ("traceback", "result", "kwargs", "args", "exception"):
        if key in event:
            event[key] = shorten(event[key], 80)
            text = json.dumps(event, default=str)
            if len(text.encode()) <= limit:
                return text
    raise ValueError(f"an event of {len(text.encode())} bytes does not fit in {limit}")


class EventSender:
    """Publishes one worker's events (in each of its processes, on a connection of its own)."""

    def __init__(self, broker: Broker, hostname: str) -> None:
        self.broker = broker
        self.hostname = hostname
        self._started: dict[str, float] = {}
        self._outage = Outage(
            "Sending task events", logger, transient=(*TRANSIENT, *broker.connection_errors)
        )

    def send(self, type_: str, **fields: Any) -> None:
        """Publish event ``type_`` (never raises: a broker outage is logged once)."""
        event = {
            "type": type_,
            "hostname": self.hostname,
            "timestamp": time.time(),
            "pid": os.getpid(),
            **fields,
        }
        self._outage.attempt(lambda: self._publish(event), time.monotonic())

    def _publish(self, event: dict[str, Any]) -> None:
        fanout = _fanout(self.broker, shared=True)
        if fanout is None:
            return
        limit = NOTIFY_LIMIT if isinstance(fanout, PostgresFanout) else None
        try:
            fanout.publish(TOPIC, encode(event, limit=limit))
        except Exception:
            fanout.close()  # connect again for the next event
            raise

    # -- the task signals ---------------------------------------------------------------------
    def on_received(self, sender: Any, message: Any, **kwargs: Any) -> None:
        self.send(
            "task-received",
            uuid=message.id,
            name=message.task,
            args=shorten(list(message.args)),
            kwargs=shorten(message.kwargs),
            retries=message.retries,
            eta=message.eta.isoformat() if message.eta else None,
            expires=message.expires.isoformat() if message.expires else None,
            root_id=message.root_id,
            parent_id=message.parent_id,
            queue=message.queue,
        )

    def on_started(self, sender: Any, task_id: str, request: Any = None, **kwargs: Any) -> None:
        self._started[task_id] = time.perf_counter()
        self.send(
            "task-started",
            uuid=task_id,
            name=getattr(sender, "name", None),
            retries=getattr(request, "retries", 0),
        )

    def _runtime(self, task_id: str) -> float | None:
        started = self._started.pop(task_id, None)
        return None if started is None else round(time.perf_counter() - started, 6)

    def on_succeeded(self, sender: Any, task_id: str, result: Any = None, **kwargs: Any) -> None:
        self.send(
            "task-succeeded",
            uuid=task_id,
            name=getattr(sender, "name", None),
            result=shorten(repr(result)),
            runtime=self._runtime(task_id),
        )

    def on_failed(
        self,
        sender: Any,
        task_id: str,
        exception: BaseException | None = None,
        traceback: str = "",
        **kwargs: Any,
    ) -> None:
        self.send(
            "task-failed",
            uuid=task_id,
            name=getattr(sender, "name", None),
            exception=shorten(exception),
            traceback=shorten(traceback, 4 * SHOWN),
            runtime=self._runtime(task_id),
        )

    def on_retried(self, sender: Any, task_id: str, reason: Any = None, **kwargs: Any) -> None:
        self.send(
            "task-retried",
            uuid=task_id,
            name=getattr(sender, "name", None),
            exception=shorten(reason),
            runtime=self._runtime(task_id),
        )

    def on_revoked(
        self,
        sender: Any,
        task_id: str,
        terminated: bool = False,
        expired: bool = False,
        signum: int | None = None,
        **kwargs: Any,
    ) -> None:
        self._started.pop(task_id, None)
        self.send(
            "task-revoked",
            uuid=task_id,
            name=getattr(sender, "name", None),
            terminated=terminated,
            expired=expired,
            signum=signum,
        )

    def connect(self) -> None:
        """Connect the receivers of the task signals (before the pool forks: children inherit)."""
        for index, (signal, receiver) in enumerate(self._receivers()):
            signal.connect(receiver, weak=False, dispatch_uid=("django_tq.events", id(self), index))

    def disconnect(self) -> None:
        """Disconnect them."""
        for index, (signal, _) in enumerate(self._receivers()):
            signal.disconnect(dispatch_uid=("django_tq.events", id(self), index))

    def _receivers(self) -> list[tuple[Any, Any]]:
        return [
            (signals.task_received, self.on_received),
            (signals.task_started, self.on_started),
            (signals.task_succeeded, self.on_succeeded),
            (signals.task_failed, self.on_failed),
            (signals.task_retried, self.on_retried),
            (signals.task_revoked, self.on_revoked),
        ]

    # -- the worker's own ---------------------------------------------------------------------
    def worker_event(self, type_: str, *, active: int, processed: int, freq: float) -> None:
        """Publish ``worker-online``, ``worker-heartbeat`` or ``worker-offline``."""
        load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
        self.send(
            type_,
            freq=freq,
            active=active,
            processed=processed,
            loadavg=[round(value, 2) for value in load],
            sw_ident="django_tq",
            sw_sys=os.uname().sysname,
        )


def enable(broker: Broker, hostname: str) -> EventSender | None:
    """Start sending ``hostname``'s events on ``broker``; None (and a warning) where they cannot."""
    if not supported(broker):
        logger.warning(
            "Task events (-E) are not sent on %s: they need Redis, RabbitMQ or django:// on "
            "PostgreSQL",
            broker.safe_url,
        )
        return None
    sender = EventSender(broker, hostname)
    sender.connect()
    return sender


class EventReceiver:
    """Every event published from now on (``tqevents``), decoded."""

    def __init__(self, broker: Broker | None = None) -> None:
        broker = broker or get_broker()
        fanout = _fanout(broker, shared=False)
        if fanout is None:
            raise ValueError(
                f"no task events on {broker.safe_url}: they need Redis, RabbitMQ or "
                "django:// on PostgreSQL"
            )
        self.subscriber: Subscriber = fanout.subscribe(TOPIC)

    def poll(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        """Return the events that arrive within ``timeout`` seconds (bad ones skipped, logged)."""
        texts = self.subscriber.wait(timeout) if timeout > 0 else self.subscriber.poll()
        events = []
        for text in texts:
            try:
                event = json.loads(text)
            except ValueError:
                logger.warning("Ignored an event that is not JSON: %r", text[:200])
                continue
            if isinstance(event, dict) and "type" in event:
                events.append(event)
        return events

    def stream(self, *, idle: float = 1.0) -> Iterator[dict[str, Any]]:
        """Yield events as they come, for ever (close the receiver to end it)."""
        while True:
            yield from self.poll(idle)

    def close(self) -> None:
        """Unsubscribe."""
        self.subscriber.close()


def describe(event: dict[str, Any]) -> str:
    """Return ``event`` on one line, as ``tqevents`` prints it."""
    when = time.strftime("%H:%M:%S", time.localtime(float(event.get("timestamp") or 0)))
    kind = str(event.get("type", "?"))
    if kind.startswith("task-"):
        line = f"{when} {kind:<15} {event.get('name') or '?'}[{event.get('uuid')}]"
        line += f" on {event.get('hostname')}"
        details = [
            f"{key}={event[key]}"
            for key in ("args", "kwargs", "runtime", "result", "exception", "retries")
            if event.get(key) not in (None, "", 0)
        ]
    else:
        line = f"{when} {kind:<15} {event.get('hostname')}"
        details = [f"{key}={event[key]}" for key in ("active", "processed") if key in event]
    return " ".join([line, *details])
