"""kombu transports django_tq provides, by URL scheme.

``django://`` keeps the queue in a database table; ``redis://`` is django_tq's leased Redis
transport. Both are kombu virtual transports whose acks are durable and whose unacked messages
come back only when their lease runs out (see ``leased.py``). ``amqp://`` is kombu's py-amqp.

kombu itself knows neither: :func:`register_with_kombu` (run by the app's ``ready()``) adds them
to kombu's transport names, so any kombu code in the process — a script, a Celery app, another
service's producer — can open ``kombu.Connection("django://")``. kombu's own ``redis://`` stays
kombu's (other code in the process may use it); django_tq's Redis transport is registered as
``tqredis://`` (``tqrediss://`` with TLS), which ``TQ["BROKER_URL"]`` accepts too.
``sentinel://h:p;sentinel://h:p`` in ``TQ["BROKER_URL"]`` is django_tq's Redis transport on the
primary Redis Sentinel names (``redis_sentinel.py``).
"""

from __future__ import annotations

import logging

from kombu import transport as kombu_transports

logger = logging.getLogger("django_tq.transport")

_DATABASE = "django_tq.transport.database:Transport"
_REDIS = "django_tq.transport.redis:Transport"
_SECURE_REDIS = "django_tq.transport.redis:SecureTransport"
_SENTINEL = "django_tq.transport.redis_sentinel:SentinelTransport"

#: URL scheme of ``TQ["BROKER_URL"]`` -> kombu transport class path
TRANSPORTS = {
    "django": _DATABASE,
    "redis": _REDIS,
    "rediss": _SECURE_REDIS,
    "tqredis": _REDIS,
    "tqrediss": _SECURE_REDIS,
    "sentinel": _SENTINEL,
    "amqp": "amqp",
    "pyamqp": "amqp",
    "amqps": "amqp",
    "memory": "memory",
}

#: the names django_tq's transports are known by in kombu (``kombu.Connection("<name>://…")``)
KOMBU_ALIASES = {"django": _DATABASE, "tqredis": _REDIS, "tqrediss": _SECURE_REDIS}


def register_with_kombu() -> list[str]:
    """Make kombu resolve ``django://``, ``tqredis://`` and ``tqrediss://`` URLs; return them.

    Idempotent, and needs no Django settings (a producer that is not a Django project may call
    it). A name another library registered first for a different transport is left alone, with
    a warning: kombu would otherwise send that library's messages to django_tq's transport.
    """
    registered = []
    for name, path in KOMBU_ALIASES.items():
        current = kombu_transports.TRANSPORT_ALIASES.setdefault(name, path)
        if current == path:
            registered.append(name)
        else:
            logger.warning(
                "kombu transport name %r is taken by %r: %s:// URLs do not reach django_tq",
                name,
                current,
                name,
            )
    return registered
