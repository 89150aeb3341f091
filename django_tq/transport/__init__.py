"""kombu transports django_tq provides, by URL scheme.

``django://`` keeps the queue in a database table; ``redis://`` is django_tq's leased Redis
transport. Both are kombu virtual transports whose acks are durable and whose unacked messages
come back only when their lease runs out (see ``leased.py``). ``amqp://`` is kombu's py-amqp.
"""

from __future__ import annotations

#: URL scheme -> kombu transport class path
TRANSPORTS = {
    "django": "django_tq.transport.database:Transport",
    "redis": "django_tq.transport.redis:Transport",
    "rediss": "django_tq.transport.redis:SecureTransport",
    "amqp": "amqp",
    "pyamqp": "amqp",
    "amqps": "amqp",
    "memory": "memory",
}
