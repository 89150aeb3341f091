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
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.core.exceptions import ImproperlyConfigured
from kombu import Connection, Exchange, Producer, Queue
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.utils.objects import cached_property

from django_tq.broker import delivery_limit, exchange_emulation, existing_queues
from django_tq.broker.confirms import Confirms, ConfirmTimeout, Late, OnLateFailure
from django_tq.broker.confirms import Message as AmqpMessage
from django_tq.broker.delivery import Delivery
from django_tq.broker.late_confirms import LateConfirms
from django_tq.broker.retry_policy import DEFAULT_RETRY_POLICY, RetryPolicy
from django_tq.broker.subscription import Subscription
from django_tq.conf import on_reload, tq_settings
from django_tq.exceptions import PublishError
from django_tq.message import WireMessage
from django_tq.outgoing import Outgoing
from django_tq.transport import TRANSPORTS
from django_tq.transport.leased import owner_prefix

__all__ = ["MAX_PRIORITY", "Broker", "Outgoing", "get_broker"]

logger = logging.getLogger("django_tq.broker")

#: AMQP queues are declared with this many priority levels (0-9, 9 highest).
MAX_PRIORITY = 10


#: ``BROKER_CONFIRM``: a publish returns once RabbitMQ confirmed it, or once it is written
CONFIRM_MODES = ("wait", "batch")

#: the URL schemes of RabbitMQ (kombu's py-amqp)
AMQP_SCHEMES = frozenset({"amqp", "pyamqp", "amqps"})
#: ``quorum_queues=True`` (or ``"*"``): every queue
ALL_QUEUES: frozenset[str] = frozenset({"*"})


def quorum_queue_names(value: Any) -> frozenset[str]:
    """Return the ``quorum_queues`` transport option as a set of names (:data:`ALL_QUEUES`)."""
    if value is True or value == "*":
        return ALL_QUEUES
    if not value:
        return frozenset()
    if isinstance(value, str):
        value = value.split(",")  # from a URL query string
    if not isinstance(value, list | tuple | set | frozenset):
        raise ImproperlyConfigured(
            "BROKER_TRANSPORT_OPTIONS['quorum_queues'] is a list of queue names or True, "
            f"not {value!r}."
        )
    names = frozenset(str(name).strip() for name in value)
    return ALL_QUEUES if "*" in names else names


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


#: forks this process descends from (a publishing connection is never shared with a child; on
#: every publish this costs less than asking for the pid)
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_count_fork)


class Broker:
    """The broker named by a URL: publishing, consuming and queue administration."""

    def __init__(
        self,
        url: str,
        *,
        transport_options: dict[str, Any] | None = None,
        connect_timeout: float = 4.0,
        use_ssl: bool | dict[str, Any] | None = None,
        heartbeat: float = 0.0,
        confirm: str = "wait",
    ) -> None:
        if confirm not in CONFIRM_MODES:
            raise ImproperlyConfigured(
                f"BROKER_CONFIRM is one of {CONFIRM_MODES}, not {confirm!r}."
            )
        self.url = url
        self.connect_timeout = connect_timeout
        #: AMQP heartbeat of consuming connections, in seconds (0: none; see subscription.py)
        self.heartbeat = heartbeat
        #: kombu's ``ssl``: True, or the TLS options of the transport (``BROKER_USE_SSL``)
        self.use_ssl = use_ssl
        self._kombu_url, self._transport, url_options = _transport_for(url)
        self.transport_options = {**url_options, **(transport_options or {})}
        self.scheme = urlsplit(url).scheme
        #: AMQP queues declared as quorum queues (``transport_options["quorum_queues"]``)
        self.quorum_queues = quorum_queue_names(self.transport_options.pop("quorum_queues", ()))
        #: quorum queues an earlier version declared without a dead-letter exchange (a policy
        #: gives them one: ``broker/delivery_limit.py``)
        self.legacy_quorum_queues = quorum_queue_names(
            self.transport_options.pop("legacy_quorum_queues", ())
        )
        #: queues declared otherwise that exist on RabbitMQ as quorum queues (Celery's)
        self.found_quorum_queues: set[str] = set()
        #: RabbitMQ: whether a publish returns only once the broker confirmed it (the default)
        self.confirms_publish = False
        if self.is_amqp:
            # The confirms are ours (broker/confirms.py), one wait per burst: py-amqp's
            # ``confirm_publish`` would wait after each message on every channel.
            self.confirms_publish = bool(self.transport_options.pop("confirm_publish", True))
        #: RabbitMQ with confirms and ``BROKER_CONFIRM="batch"``: a publish given an
        #: ``on_late_failure`` returns once written; its confirm is read in the background
        self.confirms_late = self.confirms_publish and confirm == "batch"
        self._late_confirms = LateConfirms()
        #: read on every publish: worked out once
        self._database_alias = (
            str(self.transport_options.get("alias", "default")) if self.is_database else None
        )
        self._local = threading.local()
        self._declared: set[str] = set()

    # -- connections ----------------------------------------------------------------------
    def connection(
        self,
        *,
        retry_connect: bool = True,
        options: dict[str, Any] | None = None,
        heartbeat: float = 0.0,
    ) -> Any:
        """Return a new kombu connection to this broker.

        ``retry_connect=False``: a failed connect raises at once instead of kombu retrying it
        for the connect timeout (the publisher retries by its own :class:`RetryPolicy`).
        ``options`` override transport options (fanout turns publisher confirms off).
        ``heartbeat``: the AMQP heartbeat to negotiate (its user must send and check them).
        """
        transport = self._transport
        if isinstance(transport, str) and ":" in transport:
            module, _, name = transport.partition(":")
            transport = getattr(__import__(module, fromlist=[name]), name)
        options = {**self.transport_options, **(options or {})}
        if not retry_connect:
            options["max_retries"] = 0
        tls = {"ssl": self.use_ssl} if self.use_ssl else {}  # else what the URL says
        return Connection(
            self._kombu_url,
            transport=transport,
            transport_options=options,
            connect_timeout=self.connect_timeout,
            heartbeat=heartbeat,
            **tls,
        )

    @cached_property
    def connection_errors(self) -> tuple[type[BaseException], ...]:
        """Return the exceptions that mean the connection to the broker is lost."""
        conn = self.connection()
        try:
            return (*conn.connection_errors, KombuOperationalError, OSError, socket.timeout)
        finally:
            conn.release()

    @cached_property
    def channel_errors(self) -> tuple[type[BaseException], ...]:
        """Return the exceptions that mean RabbitMQ closed a channel (the connection lives).

        Empty for the other transports: their errors (a database's, Redis') are their own.
        """
        if self.scheme not in ("amqp", "pyamqp", "amqps"):
            return ()
        conn = self.connection()
        try:
            return tuple(conn.channel_errors)
        finally:
            conn.release()

    @property
    def is_database(self) -> bool:
        """Return whether the queue lives in a Django database (``django://``)."""
        return self.scheme == "django"

    @property
    def database_alias(self) -> str | None:
        """Return the Django alias of a ``django://`` queue, else ``None``."""
        return self._database_alias

    def is_quorum(self, name: str) -> bool:
        """Return whether the AMQP queue ``name`` is a quorum queue (legacy ones included).

        Also one declared otherwise that RabbitMQ reported existing as a quorum queue
        (Celery's: :mod:`.existing_queues`). Never a worker's copy of a Broadcast queue: it is
        deleted with its last consumer, and a quorum queue cannot be (``quorum_queues=True``
        would make the worker's declare fail).
        """
        return (self._named_quorum(name) or name in self.found_quorum_queues) and (
            tq_settings.QUEUES.broadcast_of(name) is None
        )

    def _named_quorum(self, name: str) -> bool:
        """Return whether the transport options name ``name`` a quorum queue (legacy or not)."""
        return self.is_amqp and any(
            names is ALL_QUEUES or name in names
            for names in (self.quorum_queues, self.legacy_quorum_queues)
        )

    def is_legacy_quorum(self, name: str) -> bool:
        """Return whether ``name`` is a quorum queue declared without a dead-letter exchange."""
        names = self.legacy_quorum_queues
        return self.is_amqp and (names is ALL_QUEUES or name in names)

    def delivery_limit_queue(self, name: str) -> str | None:
        """Return the queue holding what RabbitMQ took off ``name`` at its delivery limit
        (``<name>.delivery-limit``), or ``None`` when ``name`` is not a quorum queue (or is
        such a queue itself). Only the quorum queues the transport options name have one: one
        found existing (Celery's) has no dead-letter exchange of ours."""
        source = delivery_limit.source_of(name)
        if not (self.is_quorum(name) and self._named_quorum(name)):
            return None
        if source is not None and self.is_quorum(source) and self._named_quorum(source):
            return None
        return delivery_limit.queue_name(name)

    def queue(self, name: str) -> Any:
        """Return the kombu queue called ``name``.

        On AMQP a classic queue with priorities 0-9, or a quorum queue (replicated; no
        priorities) that dead-letters a message returned more than ``MAX_DELIVERIES`` times to
        ``<name>.delivery-limit`` (:mod:`~django_tq.broker.delivery_limit`). Bound as
        ``TQ["QUEUES"]`` declares it; a worker's copy of a Broadcast queue
        (``<name>.<hostname>``) to its fanout exchange, deleted with its last consumer; any
        other queue to an exchange of its own name with its name as key. A quorum queue's
        ``<name>.delivery-limit`` is declared as :func:`~.delivery_limit.dead_letter_queue`
        says (so that its depth and purge find it as the worker made it).
        """
        source = delivery_limit.source_of(name)
        if source is not None and self.is_quorum(source) and self._named_quorum(source):
            return delivery_limit.dead_letter_queue(source)
        arguments: dict[str, Any] = {}
        if self.is_quorum(name):
            arguments = delivery_limit.source_arguments(
                int(tq_settings.MAX_DELIVERIES), name, legacy=self.is_legacy_quorum(name)
            )
        elif self.is_amqp:
            arguments = {"x-max-priority": MAX_PRIORITY}
        topology = tq_settings.QUEUES
        declared = topology.get(name)
        broadcast = topology.broadcast_of(name)
        if broadcast is not None:
            exchange = Exchange(broadcast.exchange, type="fanout")
            return Queue(name, exchange, queue_arguments=arguments, durable=False, auto_delete=True)
        if declared is not None:
            exchange = Exchange(declared.exchange, type=declared.exchange_type)
            key = "" if declared.broadcast else (declared.routing_key or name)
            return Queue(name, exchange, routing_key=key, queue_arguments=arguments, durable=True)
        return Queue(
            name,
            Exchange(name, type="direct"),
            routing_key=name,
            queue_arguments=arguments,
            durable=True,
        )

    def declare_queue(self, connection: Any, name: str) -> None:
        """Declare queue ``name`` with its exchange and binding on kombu ``connection``.

        On RabbitMQ a queue that exists with other arguments (Celery's, with no
        ``x-max-priority``) is used as it is, with a warning (:mod:`.existing_queues`).
        """
        if self.is_amqp:
            if existing_queues.declare(connection, self.queue(name)):
                self.found_quorum_queues.add(name)  # consumed as one: no channel-wide prefetch
        else:
            self.queue(name)(connection.default_channel).declare()

    @property
    def is_amqp(self) -> bool:
        """Return whether the broker is RabbitMQ (real exchanges and bindings)."""
        return self.scheme in AMQP_SCHEMES

    # -- publishing -----------------------------------------------------------------------
    def _producer(self) -> Any:
        state = self._local
        if getattr(state, "forks", None) != _forks or state.producer is None:
            state.forks = _forks  # a forked child opens connections of its own
            state.connection = self.connection(retry_connect=False)
            state.producer = Producer(state.connection)
            state.declared = set()
            state.confirms = None
            if self.confirms_publish:
                state.confirms = Confirms(state.producer.channel, url=self.safe_url)
        return state.producer

    def _reset_producer(self) -> None:
        """Drop the publishing connection a publish failed on, without waiting for the broker."""
        state = self._local
        connection = getattr(state, "connection", None)
        confirms = getattr(state, "confirms", None)
        state.producer = None
        state.confirms = None
        if confirms is not None:  # its late messages will never be confirmed now
            self._late_confirms.abandon(confirms, "the publishing connection was lost")
        if connection is not None:
            try:
                # closing an AMQP connection waits for the broker's CloseOk: on a partition,
                # for the socket's timeout, past BROKER_CONNECTION_TIMEOUT. Only drop it (the
                # collector thread never reads it meanwhile: it holds the confirms' lock too).
                if confirms is not None:
                    with confirms.lock:
                        connection.collect()
                else:
                    connection.collect() if self.is_amqp else connection.release()
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
        on_late_failure: OnLateFailure | None = None,
    ) -> None:
        """Hand ``wire`` to the broker or raise :class:`PublishError` as ``policy`` says.

        ``on_late_failure``: with ``BROKER_CONFIRM="batch"`` on RabbitMQ, return once the
        message is written, and call this (in :mod:`~.late_confirms`' thread) if the broker
        then nacks it, does not confirm it within the policy's timeout, or the connection is
        lost first. Without it, or in the default ``"wait"`` mode, return once confirmed.
        """
        outgoing = Outgoing(
            wire=wire,
            queue=queue,
            label=str(wire.headers.get("id") or ""),
            priority=priority,
            not_before=not_before,
            routing_key=routing_key,
        )
        self.publish_many([outgoing], policy=policy, on_late_failure=on_late_failure)

    def publish_many(
        self,
        burst: Sequence[Outgoing],
        *,
        policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        on_late_failure: OnLateFailure | None = None,
    ) -> None:
        """Hand every message of ``burst`` to the broker, in one go where the broker allows it.

        RabbitMQ: all published, then the publisher confirms waited for once. ``redis://``: one
        pipeline. ``django://``: one ``INSERT`` (inside the caller's transaction, if any).
        Returns when the broker has every message. A message the broker refuses (a nack) fails
        the burst with :class:`PublishError`, whose ``failed`` lists the labels it did not take;
        a lost connection publishes the unconfirmed messages again as ``policy`` says (a message
        whose confirm was lost may then be there twice: a worker skips a copy of a task that ran).
        ``on_late_failure``: with ``BROKER_CONFIRM="batch"``, return once written (see
        :meth:`publish`).
        """
        if not self.confirms_late:
            on_late_failure = None
        timeout = self.connect_timeout if policy.timeout is None else policy.timeout
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        attempt = 0
        todo = list(burst)
        while True:
            attempt += 1
            try:
                producer = self._producer()
                # each attempt gets what is left of the timeout, for connecting and for the
                # broker's confirms: the publish as a whole fails within it, never later
                remaining = max(0.1, deadline - time.monotonic())
                producer.connection.connect_timeout = min(self.connect_timeout, remaining)
                todo = self._publish_burst(producer, todo, remaining, on_late_failure, timeout)
                return
            except PublishError:
                raise
            except self.channel_errors as exc:  # the broker closed the channel: not retried
                failed = self._unconfirmed(todo)
                self._reset_producer()
                raise PublishError(
                    f"{self.safe_url} closed the publishing channel: {exc!r}",
                    failed=[item.label for item in failed],
                ) from exc
            except self.connection_errors as exc:
                last_error = exc
                todo = self._unconfirmed(todo)
                self._reset_producer()
            remaining = deadline - time.monotonic()
            out_of_retries = policy.max_retries is not None and attempt > policy.max_retries
            if remaining <= 0 or out_of_retries:
                queues = ", ".join(sorted({repr(item.queue) for item in todo}))
                raise PublishError(
                    f"Could not publish to {self.safe_url} (queue {queues}): "
                    f"{type(last_error).__name__}: {last_error}",  # redis-py's repr drops the text
                    failed=[item.label for item in todo],
                ) from last_error
            time.sleep(min(policy.wait(attempt), remaining))

    def _unconfirmed(self, burst: list[Outgoing]) -> list[Outgoing]:
        """Return the messages of ``burst`` the broker has not confirmed (after a lost connection)."""
        confirms = getattr(self._local, "confirms", None)
        if confirms is None:
            return burst
        waiting = set(confirms.unsettled())
        return [item for item in burst if item.label in waiting] if waiting else burst

    def _publish_burst(
        self,
        producer: Any,
        burst: list[Outgoing],
        timeout: float,
        on_late_failure: OnLateFailure | None = None,
        late_timeout: float = 0.0,
    ) -> list[Outgoing]:
        declared: set[str] = self._local.declared
        channel = producer.channel
        if hasattr(channel, "put_messages"):
            # django_tq's own channels take the messages as they are: no kombu re-encoding. A
            # routed message is one copy per queue its key reaches (``exchange_emulation``).
            copies: list[Outgoing] = []
            for item in burst:
                if "route" in item.wire.headers:
                    copies.extend(self._emulated_copies(item))
                else:
                    copies.append(item)
            new = {item.queue for item in copies if item.queue not in declared}
            for queue in new:
                channel.queue_declare(queue)
            channel.put_messages(copies)
            declared.update(new)
            return []
        confirms = self._local.confirms
        if confirms is not None:
            with confirms.lock:  # the collector thread reads this connection too
                return self._publish_confirmed(
                    channel, confirms, burst, timeout, on_late_failure, late_timeout
                )
        targets = [self._declare_target(channel, item) for item in burst]
        # kombu's own transports (memory://, AMQP without confirms)
        for item, (exchange, routing_key) in zip(burst, targets, strict=True):
            producer.publish(
                item.wire.body,
                exchange=exchange,
                routing_key=routing_key,
                headers=item.wire.headers,
                content_type=item.wire.content_type,
                content_encoding="utf-8" if isinstance(item.wire.body, str) else "binary",
                priority=item.priority,
                delivery_mode=2,
                retry=False,
                timeout=timeout,
                **({"not_before": item.not_before} if item.not_before else {}),
            )
        return []

    def _publish_confirmed(
        self,
        channel: Any,
        confirms: Confirms,
        burst: list[Outgoing],
        timeout: float,
        on_late_failure: OnLateFailure | None,
        late_timeout: float,
    ) -> list[Outgoing]:
        """Publish ``burst`` on a channel in confirm mode; wait for its confirms, unless late."""
        targets = [self._declare_target(channel, item) for item in burst]
        late_until = time.monotonic() + late_timeout
        with channel.connection.transport.having_timeout(timeout):
            for item, (exchange, routing_key) in zip(burst, targets, strict=True):
                properties: dict[str, Any] = {"delivery_mode": 2}
                if item.not_before:
                    properties["not_before"] = item.not_before
                # what kombu's ``prepare_message`` builds for py-amqp, with a faster header table
                message = AmqpMessage(
                    item.wire.body,
                    priority=item.priority,
                    content_type=item.wire.content_type,
                    content_encoding="utf-8" if isinstance(item.wire.body, str) else "binary",
                    application_headers=item.wire.headers,
                    **properties,
                )
                late = None if on_late_failure is None else Late(item, on_late_failure, late_until)
                confirms.publish(
                    item.label, message, exchange=exchange, routing_key=routing_key, late=late
                )
        if on_late_failure is not None:
            self._late_confirms.watch(confirms)
            return []
        try:
            nacked = confirms.wait(timeout)
        except ConfirmTimeout as exc:
            raise PublishError(
                f"{self.safe_url} did not confirm {len(exc.unsettled)} message(s) within "
                f"{timeout:.1f} s: {', '.join(exc.unsettled[:10])}",
                failed=exc.unsettled,
            ) from None
        if nacked:
            raise PublishError(
                f"{self.safe_url} refused (nack) {len(nacked)} of {len(burst)} message(s): "
                f"{', '.join(nacked[:10])}",
                failed=nacked,
            )
        return []

    @staticmethod
    def _emulated_copies(item: Outgoing) -> list[Outgoing]:
        """Return what a transport without exchanges stores for ``item``: one copy per queue.

        A message straight to its queue is itself; one through an exchange is a copy in each
        queue its routing key reaches, each saying the exchange and key in its delivery info.
        """
        route = item.wire.route
        if route is None:
            return [item]
        exchange, routing_key = route
        reached = exchange_emulation.queues_reached(tq_settings.QUEUES, exchange, routing_key)
        return [
            replace(item, queue=queue, exchange=exchange, routing_key=routing_key)
            for queue in reached
        ]

    def _declare_target(self, channel: Any, item: Outgoing) -> tuple[str, str]:
        """Declare what ``item`` is published to on a kombu channel; return (exchange, key).

        A message straight to its queue goes to the default exchange with the queue's name as
        key (the queue declared once per connection); one through an exchange goes to that
        exchange, declared once per connection with the declared queues bound to it, so nothing
        is dropped before a worker has declared them (a Broadcast queue's copies exist only
        while workers consume them).
        """
        declared: set[str] = self._local.declared
        route = item.wire.route
        if route is None:
            if item.queue not in declared:
                self.declare_queue(self._local.connection, item.queue)
                declared.add(item.queue)
            return "", item.routing_key or item.queue
        exchange, routing_key = route
        if f"exchange:{exchange}" not in declared:
            topology = tq_settings.QUEUES
            entity = Exchange(exchange, type=topology.exchange_type(exchange), durable=True)
            entity(channel).declare()
            for queue in topology.queues:
                if queue.exchange == exchange and not queue.broadcast:
                    self.declare_queue(self._local.connection, queue.name)
            declared.add(f"exchange:{exchange}")
        return exchange, routing_key

    @property
    def safe_url(self) -> str:
        """Return the URL with any password masked."""
        parts = urlsplit(self.url)
        if parts.password:
            return self.url.replace(f":{parts.password}@", ":***@")
        return self.url

    def wait_for_confirms(self, timeout: float = 10.0) -> bool:
        """Wait until every late publish of this process is confirmed or its failure handled.

        Return whether that happened within ``timeout`` seconds (``BROKER_CONFIRM="batch"``;
        at once otherwise). Called at interpreter exit and when a worker child stops.
        """
        return self._late_confirms.drain(timeout)

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
            prefix = owner_prefix(pid, hostname)
            if acked:
                channel.ack_leases(acked, prefix)
            return int(release(prefix, running))

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
        """Delete every waiting message in ``queues``; return how many.

        A quorum queue's ``<name>.delivery-limit`` is emptied with it: what RabbitMQ took off
        it at its delivery limit would otherwise be published back on it by a worker.
        """
        with self.connection() as conn:
            channel = conn.default_channel
            total = 0
            for name in queues:
                declared = tq_settings.QUEUES.get(name)
                if declared is not None and declared.broadcast:
                    continue  # its messages are in the workers' copies
                limit_queue = self.delivery_limit_queue(name)
                for queue in (name,) if limit_queue is None else (name, limit_queue):
                    self.declare_queue(conn, queue)
                    total += channel.queue_purge(queue) or 0
            return total

    def delayed(self, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        """Return up to ``limit`` messages the store holds until their ETA, soonest first, as
        ``(queue, kombu envelope)``: ``django://`` and ``redis://`` only (RabbitMQ delivers a
        delayed message at once; its consumer holds it, and ``tqinspect scheduled`` asks it)."""
        with self.connection() as conn:
            delayed = getattr(conn.default_channel, "delayed_messages", None)
            return [] if delayed is None else list(delayed(limit))

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
                    use_ssl=tq_settings.BROKER_USE_SSL,
                    heartbeat=tq_settings.BROKER_HEARTBEAT,
                    confirm=tq_settings.BROKER_CONFIRM,
                )
    return _broker


@on_reload
def _drop_broker() -> None:
    global _broker
    _broker = None
