"""``sentinel://``: the leased Redis transport on the primary that Redis Sentinel names.

The URL lists the sentinels kombu-style, ``sentinel://h1:26379;sentinel://h2:26379``, and
``BROKER_TRANSPORT_OPTIONS["master_name"]`` names the monitored primary (``sentinel_kwargs``
are passed to the connections to the sentinels: a password, TLS). Every new connection asks the
sentinels where the primary is now, so after a failover the channel's next connection — the
worker reconnects on the first error — reaches the promoted replica. A connection to a primary
that was demoted meanwhile answers writes with ``READONLY``, which is a connection error too.

Replication is asynchronous: a message the old primary took but had not passed on dies with it.
``replica_acks=1`` (a transport option of every Redis URL) makes each publish wait until a
replica holds the message (``WAIT``), so what a ``.delay()`` returned for survives a failover.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from redis import ConnectionPool
from redis import sentinel as redis_sentinel
from redis.sentinel import MasterNotFoundError

from django_tq.transport.redis import Channel, Transport

#: the port of a sentinel whose URL names none
DEFAULT_SENTINEL_PORT = 26379


def sentinel_addresses(urls: list[str]) -> list[tuple[str, int]]:
    """Return ``(host, port)`` of each ``sentinel://`` URL in ``urls``."""
    addresses = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in ("sentinel", "sentinels"):
            addresses.append((parts.hostname or "127.0.0.1", parts.port or DEFAULT_SENTINEL_PORT))
    return addresses


class Sentinels(redis_sentinel.Sentinel):
    """redis-py's ``Sentinel``, naming each sentinel by its address when none names a primary.

    redis-py lists each sentinel's error after the sentinel's ``repr`` — its whole connection
    pool, a thousand characters — which buries the reason (``certificate verify failed``).
    """

    def discover_master(self, service_name: str) -> tuple[str, int]:
        try:
            return super().discover_master(service_name)
        except MasterNotFoundError as exc:
            message = str(exc)
            for client in self.sentinels:
                address = client.connection_pool.connection_kwargs
                message = message.replace(
                    repr(client), f"sentinel {address.get('host')}:{address.get('port')}"
                )
            raise MasterNotFoundError(message) from exc


class SentinelChannel(Channel):
    """A channel whose connections go to the primary the sentinels name."""

    #: the name the sentinels monitor the primary under (``sentinel monitor <name> …``)
    master_name: str | None = None
    #: keyword arguments of the connections to the sentinels themselves
    sentinel_kwargs: dict[str, Any] | None = None
    #: sentinels (besides the one asked) that must agree before a primary is trusted
    min_other_sentinels: int = 0
    from_transport_options = (
        *Channel.from_transport_options,
        "master_name",
        "sentinel_kwargs",
        "min_other_sentinels",
    )

    def _connection_pool(self, params: dict[str, Any]) -> ConnectionPool:
        if not self.master_name:
            raise ImproperlyConfigured(
                "A sentinel:// broker needs BROKER_TRANSPORT_OPTIONS['master_name']: the name "
                "the sentinels monitor the primary under."
            )
        client = self.connection.client
        addresses = sentinel_addresses(list(client.alt or ()))
        if not addresses:  # one sentinel, which kombu gives as host and port
            addresses = [(client.hostname or "127.0.0.1", client.port or DEFAULT_SENTINEL_PORT)]
        sentinel_kwargs = {"socket_connect_timeout": params["socket_connect_timeout"]}
        sentinel_kwargs.update(self.sentinel_kwargs or {})
        params = {key: value for key, value in params.items() if key not in ("host", "port")}
        if params.pop("connection_class", None) is not None:
            params["connection_class"] = redis_sentinel.SentinelManagedSSLConnection
        manager = Sentinels(
            addresses,
            min_other_sentinels=int(self.min_other_sentinels),
            sentinel_kwargs=sentinel_kwargs,
        )
        return redis_sentinel.SentinelConnectionPool(str(self.master_name), manager, **params)


class SentinelTransport(Transport):
    """The ``sentinel://`` transport: :class:`~.redis.Transport` behind Redis Sentinel."""

    Channel = SentinelChannel
    default_port = DEFAULT_SENTINEL_PORT
