"""PostgreSQL behind a transaction-pooling proxy (PgBouncer's ``pool_mode = transaction``).

Such a pooler lends a server connection to a client for one transaction at a time, so two things
a ``django://`` consumer does on a direct connection go wrong through it:

* ``LISTEN`` registers on whichever server connection ran it, which then serves other clients:
  the consumer never hears the ``NOTIFY`` of a publish. It polls instead (the channel's
  ``polling_interval``, 50 ms).
* A session ``SET`` (``enable_sort``, ``synchronous_commit``) stays on that server connection
  and changes the queries of every client served next. Each statement carries its settings as
  ``SET LOCAL`` in the same query string instead: PostgreSQL runs a multi-statement query as one
  transaction, and ``SET LOCAL`` ends with it.

Whether a connection is pooled is found out once per consumer connection (:func:`hears_notify`:
``LISTEN`` on it, ``NOTIFY`` from another connection, wait up to a second) unless the transport
option ``transaction_pooling`` says so. Through a pooler the probe's own ``LISTEN`` may stay on a
server connection (its ``UNLISTEN`` can land on another): a channel name nobody else uses, so it
is never notified again; say ``transaction_pooling=True`` to skip the probe.
"""

from __future__ import annotations

import select
import uuid
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

#: how long the probe waits for its own notification (a direct connection hears it in ms)
PROBE_SECONDS = 1.0


def flag(value: Any) -> bool | None:
    """Return a ``transaction_pooling`` option as a bool; ``None``/``"auto"`` mean find out."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "auto"):
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(
        f"BROKER_TRANSPORT_OPTIONS['transaction_pooling'] is true, false or 'auto', not {value!r}."
    )


def hears_notify(db: Any, notifier: Callable[[], Any], timeout: float = PROBE_SECONDS) -> bool:
    """Return whether ``db`` (a Django PostgreSQL connection) receives a ``NOTIFY``.

    ``notifier()`` returns another, unconnected Django connection to the same database: the
    notification comes from there, as a publisher's does. A session whose ``LISTEN`` a pooler
    handed to another server connection hears nothing before ``timeout``.
    """
    channel = f"django_tq_probe_{uuid.uuid4().hex[:12]}"
    with db.cursor() as cursor:
        cursor.execute(f"LISTEN {channel}")
    other = notifier()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [channel])
    finally:
        other.close()
    pgconn = db.connection.pgconn
    heard = False
    try:
        ready, _, _ = select.select([pgconn.socket], [], [], timeout)
        if ready:
            pgconn.consume_input()
            while (notify := pgconn.notifies()) is not None:
                heard = heard or notify.relname.decode() == channel
    finally:
        with db.cursor() as cursor:
            cursor.execute(f"UNLISTEN {channel}")
    return heard


def local_settings(settings: list[str]) -> str:
    """Return ``SET name = value`` statements as a ``SET LOCAL`` prefix of a query string."""
    return "".join(f"{setting.replace('SET ', 'SET LOCAL ', 1)}; " for setting in settings)


def last_result(cursor: Any) -> None:
    """Move ``cursor`` past the results of a prefix of ``SET LOCAL`` statements."""
    while cursor.description is None and cursor.nextset():
        pass
