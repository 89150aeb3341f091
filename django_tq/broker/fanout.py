"""Fanout: one message to every subscriber (remote control, live events), on each transport.

A :class:`Fanout` publishes text on a *topic* (``control``, ``events``) to every process
subscribed to it, and carries replies addressed to one collector:

* **RabbitMQ** (``amqp://``): a kombu fanout exchange ``<prefix>.<topic>``; each subscriber
  declares an exclusive, auto-delete queue bound to it (gone with its connection). A reply is
  published by name to the collector's exclusive queue ``<prefix>.reply.<id>``.
* **Redis** (``redis://``): ``PUBLISH``/``SUBSCRIBE`` on ``<prefix>:<db>:<topic>`` (Pub/Sub
  ignores database numbers, so the number is in the name); a reply is ``RPUSH``-ed to the list
  ``<prefix>:<db>:reply:<id>``, which expires after :data:`REPLY_TTL` seconds.
* **PostgreSQL** (``django://`` on PostgreSQL): ``NOTIFY "<prefix>.<topic>"`` on a connection of
  the process's own, ``LISTEN`` on the subscriber's. A payload is at most
  :data:`NOTIFY_LIMIT` bytes: remote control sends only a command's id (the row holds it),
  events are cut to fit. No replies: they are rows.
* SQLite and MariaDB have no such channel: :func:`open_fanout` returns ``None``.

A subscriber's :meth:`~Subscriber.poll` never blocks: the worker parent calls it every tick.
When the connection is lost it raises the connection error and drops the connection, and the
next call connects again and subscribes anew (what was published meanwhile is not seen: fanout
is for the live, not for the durable).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from django.db import OperationalError, connections
from kombu import Exchange, Producer, Queue

if TYPE_CHECKING:
    from django_tq.broker import Broker

logger = logging.getLogger("django_tq.broker")

#: the largest NOTIFY payload PostgreSQL accepts (bytes, with room to spare)
NOTIFY_LIMIT = 7900
#: seconds a Redis reply list lives after its last reply
REPLY_TTL = 60
#: a message older than this is dropped from a RabbitMQ subscriber's queue (milliseconds)
QUEUE_MESSAGE_TTL = 60_000
#: seconds an idle :meth:`Subscriber.wait` / :meth:`ReplyBox.wait` sleeps between two reads
POLL_PAUSE = 0.02


class Subscriber:
    """Messages published on one topic since this subscriber was opened."""

    def poll(self) -> list[str]:
        """Return what arrived since the last call, without waiting."""
        raise NotImplementedError

    def wait(self, timeout: float) -> list[str]:
        """Return what arrives within ``timeout`` seconds (at once when something is there)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.poll()
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            time.sleep(min(POLL_PAUSE * 5, remaining))

    def close(self) -> None:
        """Unsubscribe and close the connection."""


class ReplyBox:
    """Where the replies to one command arrive (opened before the command is sent)."""

    def poll(self) -> list[str]:
        """Return the replies that arrived since the last call, without waiting."""
        raise NotImplementedError

    def close(self) -> None:
        """Delete the box."""


class Fanout:
    """A fanout channel of one broker (one per process and thread that uses it)."""

    #: whether replies travel here (else they are database rows)
    supports_replies = True

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def publish(self, topic: str, payload: str) -> None:
        """Send ``payload`` to every subscriber of ``topic``."""
        raise NotImplementedError

    def subscribe(self, topic: str) -> Subscriber:
        """Return a subscriber to ``topic`` (it sees what is published from now on)."""
        raise NotImplementedError

    def reply_box(self, reply_id: str) -> ReplyBox:
        """Open the box the replies to ``reply_id`` arrive in."""
        raise NotImplementedError

    def reply(self, reply_id: str, payload: str) -> None:
        """Put ``payload`` in the box ``reply_id`` (dropped when nobody waits any more)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the publishing connection."""


# -- RabbitMQ -----------------------------------------------------------------------------------
class _AmqpConnection:
    """A kombu connection opened on first use and dropped on a connection error."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._connection: Any = None

    @property
    def channel(self) -> Any:
        if self._connection is None:
            # no publisher confirms: fanout is for the live, a confirm would cost a round trip
            self._connection = self.broker.connection(
                retry_connect=False, options={"confirm_publish": False}
            )
        return self._connection.default_channel

    def run(self, action: Any) -> Any:
        """Return ``action(channel)``; on a connection error drop the connection and raise."""
        try:
            return action(self.channel)
        except self.broker.connection_errors:
            self.close()
            raise

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                logger.debug("closing a broken fanout connection failed", exc_info=True)


def _texts(channel: Any, queue: Any) -> list[str]:
    found = []
    while (message := queue(channel).get(no_ack=True)) is not None:
        body = message.body
        found.append(body.decode() if isinstance(body, bytes) else str(body))
    return found


class _AmqpSubscriber(Subscriber):
    def __init__(self, broker: Broker, exchange: Any) -> None:
        self.connection = _AmqpConnection(broker)
        self.exchange = exchange
        self.queue: Any = None
        self._subscribe()

    def _subscribe(self) -> None:
        self.queue = Queue(
            f"{self.exchange.name}.{uuid.uuid4().hex[:12]}",
            self.exchange,
            routing_key="",
            exclusive=True,
            auto_delete=True,
            durable=False,
            queue_arguments={"x-message-ttl": QUEUE_MESSAGE_TTL},  # a stalled reader: no pile
        )
        self.connection.run(lambda channel: self.queue(channel).declare())

    def poll(self) -> list[str]:
        if self.connection._connection is None:
            self._subscribe()  # after a lost connection: a new queue on a new connection
        return list(self.connection.run(lambda channel: _texts(channel, self.queue)))

    def close(self) -> None:
        self.connection.close()


class _AmqpReplyBox(ReplyBox):
    def __init__(self, connection: _AmqpConnection, name: str) -> None:
        self.connection = connection
        self.queue = Queue(name, exclusive=True, auto_delete=True, durable=False)
        connection.run(lambda channel: self.queue(channel).declare())

    def poll(self) -> list[str]:
        return list(self.connection.run(lambda channel: _texts(channel, self.queue)))

    def close(self) -> None:
        try:
            self.connection.run(lambda channel: self.queue(channel).delete())
        except Exception:
            logger.debug("deleting reply queue %s failed", self.queue.name, exc_info=True)


class AmqpFanout(Fanout):
    """Fanout over RabbitMQ: a fanout exchange per topic, an exclusive queue per subscriber."""

    def __init__(self, broker: Broker, prefix: str) -> None:
        super().__init__(prefix)
        self.broker = broker
        self.connection = _AmqpConnection(broker)

    def _exchange(self, topic: str) -> Any:
        return Exchange(f"{self.prefix}.{topic}", type="fanout", durable=False)

    def _send(self, exchange: Any, routing_key: str, payload: str) -> None:
        def send(channel: Any) -> None:
            Producer(channel).publish(
                payload,
                exchange=exchange,
                routing_key=routing_key,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=1,
                declare=[exchange] if exchange else [],
                retry=False,
            )

        self.connection.run(send)

    def publish(self, topic: str, payload: str) -> None:
        self._send(self._exchange(topic), "", payload)

    def subscribe(self, topic: str) -> Subscriber:
        return _AmqpSubscriber(self.broker, self._exchange(topic))

    def _reply_queue(self, reply_id: str) -> str:
        return f"{self.prefix}.reply.{reply_id}"

    def reply_box(self, reply_id: str) -> ReplyBox:
        return _AmqpReplyBox(self.connection, self._reply_queue(reply_id))

    def reply(self, reply_id: str, payload: str) -> None:
        self._send("", self._reply_queue(reply_id), payload)

    def close(self) -> None:
        self.connection.close()


# -- Redis --------------------------------------------------------------------------------------
class _RedisSubscriber(Subscriber):
    def __init__(self, fanout: RedisFanout, name: str) -> None:
        self.fanout = fanout
        self.name = name
        self.pubsub: Any = None
        self._subscribe()

    def _subscribe(self) -> None:
        pubsub = self.fanout.client().pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.name)
        except Exception:
            pubsub.close()
            raise
        self.pubsub = pubsub

    def poll(self) -> list[str]:
        if self.pubsub is None:
            self._subscribe()
        found = []
        try:
            while (message := self.pubsub.get_message(timeout=0)) is not None:
                if message.get("type") == "message":
                    found.append(str(message["data"]))
        except self.fanout.broker.connection_errors:
            self.close()
            raise
        return found

    def close(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                logger.debug("closing a broken subscription failed", exc_info=True)


class _RedisReplyBox(ReplyBox):
    def __init__(self, fanout: RedisFanout, key: str) -> None:
        self.fanout = fanout
        self.key = key

    def poll(self) -> list[str]:
        client = self.fanout.client()
        with client.pipeline() as pipe:  # read and empty the list in one round trip
            pipe.lrange(self.key, 0, -1)
            pipe.delete(self.key)
            found, _ = pipe.execute()
        return [str(item) for item in found]

    def close(self) -> None:
        try:
            self.fanout.client().delete(self.key)
        except Exception:
            logger.debug("deleting reply list %s failed", self.key, exc_info=True)


class RedisFanout(Fanout):
    """Fanout over Redis Pub/Sub; replies on short-lived lists."""

    def __init__(self, broker: Broker, prefix: str) -> None:
        super().__init__(prefix)
        self.broker = broker
        self._connection: Any = None

    def client(self) -> Any:
        """Return the redis-py client of django_tq's ``redis://`` channel (pooled, reconnecting)."""
        if self._connection is None:
            self._connection = self.broker.connection(retry_connect=False)
        return self._connection.default_channel.client

    def _name(self, *parts: str) -> str:
        database = self.client().connection_pool.connection_kwargs.get("db", 0)
        return ":".join((self.prefix, str(database), *parts))

    def publish(self, topic: str, payload: str) -> None:
        self.client().publish(self._name(topic), payload)

    def subscribe(self, topic: str) -> Subscriber:
        return _RedisSubscriber(self, self._name(topic))

    def reply_box(self, reply_id: str) -> ReplyBox:
        return _RedisReplyBox(self, self._name("reply", reply_id))

    def reply(self, reply_id: str, payload: str) -> None:
        key = self._name("reply", reply_id)
        with self.client().pipeline() as pipe:
            pipe.rpush(key, payload)
            pipe.expire(key, REPLY_TTL)
            pipe.execute()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.release()


# -- PostgreSQL ---------------------------------------------------------------------------------
class _PostgresSubscriber(Subscriber):
    def __init__(self, alias: str, name: str) -> None:
        self.alias = alias
        self.name = name
        self.db: Any = None
        self._received: list[str] = []
        self._listen()

    def _listen(self) -> None:
        db = connections.create_connection(self.alias)
        try:
            with db.cursor() as cursor:
                cursor.execute(f"LISTEN {db.ops.quote_name(self.name)}")
            db.connection.add_notify_handler(self._on_notify)  # those read during a query
        except Exception:
            db.close()
            raise
        self.db = db

    def _on_notify(self, notify: Any) -> None:
        self._received.append(str(notify.payload))

    def poll(self) -> list[str]:
        if self.db is None:
            self._listen()
        try:
            pgconn = self.db.connection.pgconn
            pgconn.consume_input()  # read what the socket holds, no round trip to the server
            while (notify := pgconn.notifies()) is not None:
                self._received.append(notify.extra.decode())
        except Exception as exc:
            self.close()
            raise OperationalError(f"lost the LISTEN connection: {exc}") from exc
        found, self._received = self._received, []
        return found

    def wait(self, timeout: float) -> list[str]:
        found = self.poll()
        if found or timeout <= 0:
            return found
        try:
            select.select([self.db.connection.fileno()], [], [], timeout)
        except (OSError, ValueError):  # closed under us: the next poll connects again
            self.close()
            return []
        return self.poll()

    def close(self) -> None:
        db, self.db = self.db, None
        if db is not None:
            try:
                db.close()
            except Exception:
                logger.debug("closing a broken LISTEN connection failed", exc_info=True)


class PostgresFanout(Fanout):
    """Fanout over PostgreSQL's LISTEN/NOTIFY (no replies: they are rows).

    ``NOTIFY`` goes through Django's own connection of the alias in this thread (no connection
    more; inside a transaction it is sent when that commits).
    """

    supports_replies = False

    def __init__(self, alias: str, prefix: str) -> None:
        super().__init__(prefix)
        self.alias = alias

    def _name(self, topic: str) -> str:
        return f"{self.prefix}.{topic}"

    def publish(self, topic: str, payload: str) -> None:
        if len(payload.encode()) > NOTIFY_LIMIT:
            raise ValueError(f"a NOTIFY payload holds at most {NOTIFY_LIMIT} bytes")
        with connections[self.alias].cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [self._name(topic), payload])

    def subscribe(self, topic: str) -> Subscriber:
        return _PostgresSubscriber(self.alias, self._name(topic))


def postgres_alias(alias: str | None) -> str | None:
    """Return ``alias`` when it is a PostgreSQL database (LISTEN/NOTIFY), else None."""
    if alias is None or connections[alias].vendor != "postgresql":
        return None
    return alias


def open_fanout(broker: Broker, *, prefix: str, alias: str | None = None) -> Fanout | None:
    """Return the fanout channel of ``broker``, or None where there is none.

    On ``django://`` it is PostgreSQL's NOTIFY on ``alias`` (the broker's database unless
    given), and None on SQLite and MariaDB.
    """
    if broker.scheme in ("amqp", "pyamqp", "amqps"):
        return AmqpFanout(broker, prefix)
    if broker.scheme in ("redis", "rediss", "tqredis", "tqrediss"):
        return RedisFanout(broker, prefix)
    database = postgres_alias(alias or broker.database_alias)
    return PostgresFanout(database, prefix) if database is not None else None


#: publishing channels by (process, thread, broker, prefix, alias). A forked child makes its
#: own and keeps its parent's referenced: collecting them would close the parent's sockets.
_shared: dict[tuple[int, int, str, str, str | None], Fanout | None] = {}


def shared_fanout(broker: Broker, *, prefix: str, alias: str | None = None) -> Fanout | None:
    """Return this thread's fanout channel of ``broker`` for publishing (opened once).

    Reused like the broker's publishing connection: one per process and thread, never shared
    with a forked child.
    """
    key = (os.getpid(), threading.get_ident(), broker.url, prefix, alias)
    if key not in _shared:
        _shared[key] = open_fanout(broker, prefix=prefix, alias=alias)
    return _shared[key]
