"""The one door to kombu: publish messages, and hand a consumer its deliveries.

``Broker`` turns ``TQ["BROKER_URL"]`` into kombu connections (``django://`` and ``redis://`` are
django_tq's leased transports, ``amqp://`` is kombu's py-amqp with publisher confirms), keeps one
publishing connection per thread and process, and bounds every publish by
``BROKER_CONNECTION_TIMEOUT``. The worker sees a :class:`~.subscription.Subscription` handing
it :class:`~.delivery.Delivery` objects, never a kombu object; a publish retries by a
:class:`~.retry_policy.RetryPolicy`.

The package is the one door to kombu: ``delivery.py``, ``subscription.py``, ``retry_policy.py``
each hold one of those nouns, this module the connections, publishing and queue administration.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.core.exceptions import ImproperlyConfigured
from kombu import Connection, Exchange, Producer, Queue
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.utils.objects import cached_property

from django_tq.broker.delivery import Delivery
from django_tq.broker.retry_policy import DEFAULT_RETRY_POLICY, RetryPolicy
from django_tq.broker.subscription import Subscription
from django_tq.conf import on_reload, tq_settings
from django_tq.exceptions import PublishError
from django_tq.message import WireMessage
from django_tq.transport import TRANSPORTS
from django_tq.transport.leased import owner_prefix

__all__ = ["MAX_PRIORITY", "Broker", "get_broker"]

logger = logging.getLogger("django_tq.broker")

#: AMQP queues are declared with this many priority levels (0-9, 9 highest).
MAX_PRIORITY = 10


def _transport_for(url: str) -> tuple[str, Any, dict[str, Any]]:
    """Return ``(URL for kombu, transport, transport options from a django:// query string)``."""
    parts = urlsplit(url)
    if parts.scheme not in TRANSPORTS:
        raise ImproperlyConfigured(
            f"Unknown broker URL scheme {parts.scheme!r} in TQ['BROKER_URL']: "
            f"use one of {', '.join(sorted(TRANSPORTS))}."
        )
    if parts.scheme == "django":
        return "django://", TRANSPORTS["django"], dict(parse_qsl(parts.query))
    return url, TRANSPORTS[parts.scheme], {}


class Broker:
    """The broker named by a URL: publishing, consuming and queue administration."""

    def __init__(
        self,
        url: str,
        *,
        transport_options: dict[str, Any] | None = None,
        connect_timeout: float = 4.0,
    ) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._kombu_url, self._transport, url_options = _transport_for(url)
        self.transport_options = {**url_options, **(transport_options or {})}
        self.scheme = urlsplit(url).scheme
        if self.scheme in ("amqp", "pyamqp", "amqps"):
            self.transport_options.setdefault("confirm_publish", True)
        self._local = threading.local()
        self._declared: set[str] = set()

    # -- connections ----------------------------------------------------------------------
    def connection(self, *, retry_connect: bool = True) -> Any:
        """Return a new kombu connection to this broker.

        ``retry_connect=False``: a failed connect raises at once instead of kombu retrying it
        for the connect timeout (the publisher retries by its own :class:`RetryPolicy`).
        """
        transport = self._transport
        if isinstance(transport, str) and ":" in transport:
            module, _, name = transport.partition(":")
            transport = getattr(__import__(module, fromlist=[name]), name)
        options = dict(self.transport_options)
        if not retry_connect:
            options["max_retries"] = 0
        return Connection(
            self._kombu_url,
            transport=transport,
            transport_options=options,
            connect_timeout=self.connect_timeout,
        )

    @cached_property
    def connection_errors(self) -> tuple[type[BaseException], ...]:
        """Return the exceptions that mean the connection to the broker is lost."""
        conn = self.connection()
        try:
            return (*conn.connection_errors, KombuOperationalError, OSError, socket.timeout)
        finally:
            conn.release()

    @property
    def is_database(self) -> bool:
        """Return whether the queue lives in a Django database (``django://``)."""
        return self.scheme == "django"

    @property
    def database_alias(self) -> str | None:
        """Return the Django alias of a ``django://`` queue, else ``None``."""
        return str(self.transport_options.get("alias", "default")) if self.is_database else None

    def queue(self, name: str) -> Any:
        """Return the kombu queue called ``name`` (direct to itself; priorities 0-9)."""
        arguments = (
            {"x-max-priority": MAX_PRIORITY} if self.scheme in ("amqp", "pyamqp", "amqps") else {}
        )
        return Queue(
            name,
            Exchange(name, type="direct"),
            routing_key=name,
            queue_arguments=arguments,
            durable=True,
        )

    # -- publishing -----------------------------------------------------------------------
    def _producer(self) -> Any:
        state = self._local
        if getattr(state, "pid", None) != os.getpid() or state.producer is None:
            state.pid = os.getpid()
            state.connection = self.connection(retry_connect=False)
            state.producer = Producer(state.connection)
            state.declared = set()
        return state.producer

    def _reset_producer(self) -> None:
        state = self._local
        connection = getattr(state, "connection", None)
        state.producer = None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                logger.debug("releasing a broken publishing connection failed", exc_info=True)

    def publish(
        self,
        wire: WireMessage,
        *,
        queue: str,
        priority: int | None = None,
        not_before: str | None = None,
        routing_key: str | None = None,
        policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    ) -> None:
        """Hand ``wire`` to the broker or raise :class:`PublishError` as ``policy`` says."""
        timeout = self.connect_timeout if policy.timeout is None else policy.timeout
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                producer = self._producer()
                self._publish_once(producer, wire, queue, priority, not_before, routing_key)
                return
            except self.connection_errors as exc:
                last_error = exc
                self._reset_producer()
            remaining = deadline - time.monotonic()
            out_of_retries = policy.max_retries is not None and attempt > policy.max_retries
            if remaining <= 0 or out_of_retries:
                raise PublishError(
                    f"Could not publish to {self.safe_url} (queue {queue!r}): {last_error!r}"
                ) from last_error
            time.sleep(min(policy.wait(attempt), remaining))

    def _publish_once(
        self,
        producer: Any,
        wire: WireMessage,
        queue: str,
        priority: int | None,
        not_before: str | None,
        routing_key: str | None,
    ) -> None:
        declared: set[str] = self._local.declared
        channel = producer.channel
        if hasattr(channel, "put_message"):
            # django_tq's own channels take the message as is: no kombu re-encoding on the hot path.
            if queue not in declared:
                channel.queue_declare(queue)
            channel.put_message(
                queue, wire, priority=priority, not_before=not_before, routing_key=routing_key
            )
            declared.add(queue)
            return
        declare = []
        if queue not in declared:
            declare = [self.queue(queue)]
        properties = {"not_before": not_before} if not_before else {}
        producer.publish(
            wire.body,
            exchange="",
            routing_key=routing_key or queue,
            headers=wire.headers,
            content_type=wire.content_type,
            content_encoding="utf-8" if isinstance(wire.body, str) else "binary",
            priority=priority,
            delivery_mode=2,
            declare=declare,
            retry=False,
            timeout=self.connect_timeout,
            **properties,
        )
        declared.add(queue)

    @property
    def safe_url(self) -> str:
        """Return the URL with any password masked."""
        parts = urlsplit(self.url)
        if parts.password:
            return self.url.replace(f":{parts.password}@", ":***@")
        return self.url

    # -- consuming and administration ------------------------------------------------------
    def subscribe(
        self,
        queues: list[str],
        *,
        prefetch: int,
        on_delivery: Callable[[Delivery], None],
        accept_celery: bool = False,
    ) -> Subscription:
        """Open a consuming connection on ``queues`` with a prefetch window of ``prefetch``.

        ``accept_celery``: also hand out what Celery producers publish to these queues (on
        ``redis://`` they write kombu's own lists, which the channel then drains too).
        """
        return Subscription(self, queues, prefetch, on_delivery, accept_celery=accept_celery)

    def release_leases_of(
        self,
        pid: int,
        *,
        running: Collection[Any] = (),
        acked: Collection[Any] = (),
        hostname: str | None = None,
    ) -> int:
        """Make every message leased by process ``pid`` visible again (it died); return how many.

        ``running`` are the delivery tags it was executing: only those count as deliveries.
        ``acked`` are tags to acknowledge instead (settled by the caller, e.g. terminated).
        """
        with self.connection() as conn:
            channel = conn.default_channel
            release = getattr(channel, "release_owner_prefix", None)
            if release is None:
                return 0  # AMQP gives a dead consumer's messages back by itself
            if acked:
                channel.ack_leases(acked)
            return int(release(owner_prefix(pid, hostname), running))

    def leased_delivery(
        self, pid: int, tag: Any, *, hostname: str | None = None
    ) -> Delivery | None:
        """Return the message ``tag`` that process ``pid`` holds a lease on (it died running it).

        None on AMQP, which gives a dead consumer's messages back by itself, and when the
        message is gone or leased by another process now. The delivery is for reading: settle
        it with :meth:`release_leases_of`.
        """
        with self.connection() as conn:
            channel = conn.default_channel
            read = getattr(channel, "leased_payload", None)
            raw = read(owner_prefix(pid, hostname), tag) if read is not None else None
            if raw is None:
                return None
            message = channel.Message(raw, channel=channel)
            return Delivery(message, message.delivery_info.get("routing_key") or "")

    def purge(self, queues: list[str]) -> int:
        """Delete every waiting message in ``queues``; return how many."""
        with self.connection() as conn:
            channel = conn.default_channel
            total = 0
            for name in queues:
                self.queue(name)(channel).declare()
                total += channel.queue_purge(name) or 0
            return total

    def depth(self, queue: str) -> int:
        """Return the number of messages in ``queue`` (waiting and leased); 0 if it does not exist.

        The declare is passive: reading a depth never creates a queue on the broker.
        """
        with self.connection() as conn:
            channel = conn.default_channel
            try:
                _, count, _ = self.queue(queue)(channel).queue_declare(passive=True)
            except conn.channel_errors:  # NOT_FOUND: no such queue, so nothing waits in it
                return 0
            return int(count or 0)


_broker: Broker | None = None
_broker_lock = threading.Lock()


def get_broker() -> Broker:
    """Return the broker named by ``TQ["BROKER_URL"]`` (built once per settings load)."""
    global _broker
    if _broker is None:
        with _broker_lock:
            if _broker is None:
                _broker = Broker(
                    tq_settings.BROKER_URL,
                    transport_options={
                        "lease_seconds": tq_settings.LEASE_SECONDS,
                        **tq_settings.BROKER_TRANSPORT_OPTIONS,
                    },
                    connect_timeout=tq_settings.BROKER_CONNECTION_TIMEOUT,
                )
    return _broker


@on_reload
def _drop_broker() -> None:
    global _broker
    _broker = None
