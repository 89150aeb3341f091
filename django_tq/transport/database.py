"""``django://``: a kombu transport whose queue is the ``QueueMessage`` table.

* Publishing inserts a row through the caller's own Django connection, so inside
  ``transaction.atomic()`` the message commits or rolls back with the caller's data.
* Consuming claims rows through a connection of its own (never the one task code uses): one
  statement on PostgreSQL (``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``)
  and SQLite (``UPDATE … RETURNING``; SQLite has one writer), ``SELECT … FOR UPDATE SKIP LOCKED`` +
  ``UPDATE`` in one short transaction on MySQL/MariaDB.
* On PostgreSQL the insert sends ``NOTIFY django_tq`` (delivered at commit) and idle consumers
  ``LISTEN``, so an idle worker wakes in about a round trip instead of a polling interval.
  Behind a transaction-pooling PgBouncer (found out, or ``transaction_pooling=True``) consumers
  poll and their settings are per statement (``SET LOCAL``): see :mod:`.pooling`.
* On SQLite the channel's own connection waits for the write lock (a busy timeout of
  :data:`django_tq.sqlite.BUSY_TIMEOUT` unless ``OPTIONS`` sets one) and begins any transaction
  ``IMMEDIATE``, whatever the alias's ``OPTIONS`` say (see :mod:`django_tq.sqlite`).

``django://?alias=queue`` puts the queue in another database alias (read from the URL by the
transport itself, so ``kombu.Connection("django://?alias=queue")`` works outside django_tq too).
"""

from __future__ import annotations

import datetime as dt
import json
import select
from collections.abc import Collection
from contextlib import nullcontext
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.db.models import F
from django.utils import timezone

from django_tq.folded_ack import FoldedAck
from django_tq.models import QueueMessage
from django_tq.sqlite import own_settings
from django_tq.transport import pooling
from django_tq.transport.leased import LeasedChannel, LeasedTransport

NOTIFY_CHANNEL = "django_tq"


def _table() -> str:
    return QueueMessage._meta.db_table


class Channel(LeasedChannel):
    """A channel over the queue table of one database alias."""

    polling_interval = 0.05
    #: PostgreSQL: whether claims, renewals and acks wait for the WAL flush. Off saves a disk
    #: flush per statement; a server crash (not a restart) may then forget the last fraction of
    #: a second of claims and acks, so those messages are delivered again: never lost.
    synchronous_commit = False
    #: PostgreSQL through a transaction-pooling proxy (PgBouncer): no ``LISTEN``, no session
    #: ``SET``. ``None`` finds out once per consumer connection (a ``LISTEN``/``NOTIFY`` probe).
    transaction_pooling: bool | str | None = None
    #: acks wait up to 50 ms for the next claim to carry them (:mod:`.ack_batch`); on a backlog
    #: a task then costs no ack round trip (``0``: each ack is its own statement, at once)
    ack_batch_seconds = 0.05
    #: a claim may take more than the free prefetch window while the last one came back full
    #: and its messages lasted less than this (:meth:`LeasedChannel._claim_size`)
    deep_claim_seconds = 0.05
    from_transport_options = (
        *LeasedChannel.from_transport_options,
        "synchronous_commit",
        "transaction_pooling",
    )

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.alias: str = connection.alias
        self._consumer_db: Any = None
        self._listening = False
        self._notified = False
        #: the ``SET LOCAL`` prefix of every statement on a pooled connection ("" when direct)
        self._local_settings = ""
        #: whether the consumer connection is pooled (known once it exists)
        self.is_pooled = False
        #: :meth:`folded_ack`'s statement ("" where the database cannot fold it), built once
        self._folded_delete: str | None = None
        #: the psycopg cursor claims are prepared on, and the raw connection it belongs to
        self._claim_cursor: tuple[Any, Any] | None = None

    # -- connections --------------------------------------------------------------------------
    @property
    def consumer_db(self) -> Any:
        """Return this channel's own database connection (claims, acks, renewals, LISTEN)."""
        if self._consumer_db is None:
            db = connections.create_connection(self.alias)
            if db.vendor == "sqlite":
                db.settings_dict = own_settings(db.settings_dict)
            db.inc_thread_sharing()  # the lease renewer runs in another thread, under self._lock
            self._consumer_db = db
            self._listening = False
            if db.vendor == "postgresql":
                self._set_up_postgresql(db)
        return self._consumer_db

    def _set_up_postgresql(self, db: Any) -> None:
        """Apply the session settings: once on a direct connection, per statement when pooled."""
        pooled = pooling.flag(self.transaction_pooling)
        if pooled is None:
            pooled = not pooling.hears_notify(db, lambda: connections.create_connection(self.alias))
        self.is_pooled = pooled
        settings = self._postgresql_session_settings()
        if pooled:
            if db.settings_dict.get("OPTIONS", {}).get("server_side_binding"):
                raise ImproperlyConfigured(
                    f"DATABASES[{self.alias!r}] is behind a transaction pooler: django:// needs "
                    "client-side binding there (remove OPTIONS['server_side_binding'])."
                )
            self._local_settings = pooling.local_settings(settings)
            return
        self._local_settings = ""
        with db.cursor() as cursor:
            for setting in settings:
                cursor.execute(setting)

    def _postgresql_session_settings(self) -> list[str]:
        """Return the ``SET`` statements this channel's own PostgreSQL connection runs once.

        ``enable_sort = off``: a claim must walk the ``tq_queue_claim`` index in its order and
        stop after ``limit`` rows. With no or stale statistics (a table just truncated or filled,
        autovacuum off) the planner guesses a handful of rows per queue and prefers a bitmap scan
        of the whole queue plus a sort: 2-7 ms a claim with 5,000 ready rows instead of 0.1 ms.
        Nothing else this connection runs sorts (acks, renewals and releases go by primary key),
        and a sort that has no index to replace it still runs, only priced high.
        """
        settings = ["SET enable_sort = off"]
        if not self.synchronous_commit:
            settings.append("SET synchronous_commit = off")
        return settings

    def _execute(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = self.consumer_db
        try:
            with db.cursor() as cursor:
                if self._local_settings:
                    cursor.execute(self._local_settings + sql, params)
                    pooling.last_result(cursor)
                else:
                    cursor.execute(sql, params)
                return list(cursor.fetchall()) if cursor.description else []
        except (OperationalError, InterfaceError):
            self._drop_consumer_db()
            raise

    def _execute_prepared(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Run ``sql`` as a server-side prepared statement on a direct PostgreSQL connection.

        The claim runs on every wake-up and between batches: prepared, PostgreSQL parses it once
        per connection and, after five runs, plans it once (a generic plan; ``enable_sort =
        off`` keeps that plan on the claim index). The statement goes straight to psycopg, past
        Django's cursor wrapper, on a cursor of its own that binds parameters on the server and
        sends every ``int`` as ``bigint`` (one prepared statement per text, whatever the values).
        Behind a transaction pooler (PgBouncer) nothing is prepared: :meth:`_execute`.
        """
        if self.is_pooled:
            return self._execute(sql, params)
        db = self.consumer_db
        try:
            with db.wrap_database_errors:
                db.ensure_connection()
                cursor = self._prepared_cursor(db.connection)
                cursor.execute(sql, params, prepare=True)
                return cursor.fetchall() if cursor.description else []
        except (OperationalError, InterfaceError):
            self._drop_consumer_db()
            raise

    def _prepared_cursor(self, raw: Any) -> Any:
        if self._claim_cursor is None or self._claim_cursor[0] is not raw:
            # import-inside: optional extra (psycopg: ``django_tq[postgres]``, PostgreSQL only)
            import psycopg
            from psycopg.types.numeric import Int8Dumper

            # Django opens connections with ``prepare_threshold=None``, which turns even
            # ``prepare=True`` off; a threshold no other statement reaches turns it back on for
            # this (the channel's own) connection, and only where asked.
            if raw.prepare_threshold is None:
                raw.prepare_threshold = 2**31
            cursor = psycopg.Cursor(raw)
            cursor.adapters.register_dumper(int, Int8Dumper)
            self._claim_cursor = (raw, cursor)
        return self._claim_cursor[1]

    def _drop_consumer_db(self) -> None:
        db, self._consumer_db = self._consumer_db, None
        self._claim_cursor = None
        self._listening = False
        if db is not None:
            try:
                db.close()
            except DatabaseError:
                pass

    def _quote(self, name: str) -> str:
        return self.consumer_db.ops.quote_name(name)

    def _adapt(self, db: Any, value: dt.datetime) -> Any:
        return db.ops.adapt_datetimefield_value(value)

    # -- publishing (the caller's connection) ------------------------------------------------
    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        self._put_many([(queue, message)])

    def _put_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """Insert the rows in as few statements as the database takes, in one transaction.

        On PostgreSQL the same statement notifies each queue once (delivered at commit).
        """
        db = connections[self.alias]
        quote = db.ops.quote_name
        columns = ", ".join(
            quote(c)
            for c in ("queue", "priority", "payload", "not_before", "delivery_count", "created_at")
        )
        now = timezone.now()
        rows = []
        for queue, message in messages:
            not_before = message.get("properties", {}).get("not_before")
            when = dt.datetime.fromisoformat(not_before) if not_before else now
            priority = self._get_message_priority(message)
            rows.append(
                [queue, priority, json.dumps(message), self._adapt(db, when), self._adapt(db, now)]
            )
        size = max(1, db.ops.bulk_batch_size(["queue", "priority", "payload", "nb", "ca"], rows))
        insert = f"INSERT INTO {quote(_table())} ({columns}) VALUES "
        # One statement commits alone; several commit together (a savepoint in a transaction).
        together = transaction.atomic(using=self.alias) if len(rows) > size else nullcontext()
        with together, db.cursor() as cursor:
            for start in range(0, len(rows), size):
                chunk = rows[start : start + size]
                values = ", ".join(["(%s, %s, %s, %s, 0, %s)"] * len(chunk))
                params = [value for row in chunk for value in row]
                if db.vendor == "postgresql":
                    cursor.execute(
                        f"WITH ins AS ({insert}{values} RETURNING {quote('queue')}) "
                        "SELECT pg_notify(%s, q) FROM (SELECT DISTINCT "
                        f"{quote('queue')} AS q FROM ins) AS queues",
                        [*params, NOTIFY_CHANNEL],
                    )
                else:
                    cursor.execute(insert + values, params)

    def _size(self, queue: str) -> int:
        return QueueMessage.objects.using(self.alias).filter(queue=queue).count()

    def _purge(self, queue: str) -> int:
        deleted, _ = (
            QueueMessage.objects.using(self.alias)
            .filter(queue=queue, lease_owner__isnull=True)
            .delete()
        )
        return deleted

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        """Queues are rows; nothing to create."""

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return True

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        QueueMessage.objects.using(self.alias).filter(queue=queue).delete()

    # -- claiming and leases (the channel's own connection) ----------------------------------
    def _claim(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """Claim up to ``limit`` messages of ``queue``; the queued acks travel with it.

        PostgreSQL: one statement (the acks' ``DELETE`` in a writable CTE of the claim). MySQL
        and MariaDB: the ``DELETE`` in the claim's transaction (one commit). SQLite: the
        ``DELETE``, then the claim (no writable CTE; both local, the lock taken once).
        """
        db = self.consumer_db
        acked = self.take_acks()
        try:
            if db.vendor == "postgresql":
                rows = self._execute_prepared(*self.claim_statement(queue, limit, acked))
            elif db.vendor == "sqlite":
                if acked:
                    self._ack(acked, self.owner)
                rows = self._execute(*self.claim_statement(queue, limit))
            else:
                table, visible, order = self._claim_parts()
                now_db, lease = self._lease(db)
                rows = self._claim_in_transaction(
                    db, table, visible, order, [queue, now_db, now_db], lease, limit, acked
                )
        except BaseException:
            self.give_back_acks(acked)
            raise
        rows.sort(key=lambda row: (-row[3], row[0]))
        return [self._payload(row[0], row[1], row[2]) for row in rows]

    def _claim_parts(self) -> tuple[str, str, str]:
        """Return the quoted table, the condition of a visible row of one queue, and the order."""
        q = self._quote
        visible = (
            f"{q('queue')} = %s AND {q('not_before')} <= %s "
            f"AND ({q('lease_expires_at')} IS NULL OR {q('lease_expires_at')} < %s)"
        )
        return q(_table()), visible, f"ORDER BY {q('priority')} DESC, {q('id')}"

    def _lease(self, db: Any) -> tuple[Any, list[Any]]:
        """Return now, and the owner and expiry a claim writes, adapted for ``db``."""
        now = timezone.now()
        expires = now + dt.timedelta(seconds=self.lease_seconds)
        return self._adapt(db, now), [self.owner, self._adapt(db, expires)]

    def claim_statement(
        self, queue: str, limit: int, acked: Collection[Any] = ()
    ) -> tuple[str, list[Any]]:
        """Return the one statement (and its parameters) that claims on PostgreSQL and SQLite.

        ``acked`` (PostgreSQL only): tags this channel acked; the statement deletes them first
        (``WITH a AS (DELETE … WHERE id = ANY(…) AND lease_owner = <owner>)``, fenced as
        :meth:`_ack`) and never claims them again (a lease of ours that expired meanwhile).
        """
        db = self.consumer_db
        q = self._quote
        table, visible, order = self._claim_parts()
        now_db, lease = self._lease(db)
        lock = " FOR UPDATE SKIP LOCKED" if db.vendor == "postgresql" else ""
        fold, not_acked, fold_params, skip_params = "", "", [], []
        if acked:
            if db.vendor != "postgresql":
                raise ValueError("only PostgreSQL folds acks into the claim")
            tags = [int(tag) for tag in acked]
            fold = (
                f"WITH a AS (DELETE FROM {table} WHERE {q('id')} = ANY(%s) "
                f"AND {q('lease_owner')} = %s) "
            )
            not_acked = f" AND NOT ({q('id')} = ANY(%s))"
            fold_params, skip_params = [tags, self.owner], [tags]
        sql = (
            f"{fold}UPDATE {table} SET {q('lease_owner')} = %s, {q('lease_expires_at')} = %s, "
            f"{q('delivery_count')} = {q('delivery_count')} + 1 "
            f"WHERE {q('id')} IN (SELECT {q('id')} FROM {table} WHERE {visible}{not_acked} "
            f"{order} LIMIT %s{lock}) "
            f"RETURNING {q('id')}, {q('payload')}, {q('delivery_count')}, {q('priority')}"
        )
        return sql, [*fold_params, *lease, queue, now_db, now_db, *skip_params, limit]

    def _claim_in_transaction(
        self,
        db: Any,
        table: str,
        visible: str,
        order: str,
        params: list[Any],
        lease: list[Any],
        limit: int,
        acked: list[Any],
    ) -> list[tuple[Any, ...]]:
        q = self._quote
        lock = (
            " FOR UPDATE SKIP LOCKED"
            if db.features.has_select_for_update_skip_locked
            else " FOR UPDATE"
        )
        try:
            with db.cursor() as cursor:
                cursor.execute("BEGIN")
                try:
                    if acked:  # the queued acks commit with the claim
                        cursor.execute(
                            f"DELETE FROM {table} WHERE {q('id')} IN ({self._in(acked)}) "
                            f"AND {q('lease_owner')} = %s",
                            [*acked, self.owner],
                        )
                    cursor.execute(
                        f"SELECT {q('id')}, {q('payload')}, {q('delivery_count')}, {q('priority')} "
                        f"FROM {table} WHERE {visible} {order} LIMIT %s{lock}",
                        [*params, limit],
                    )
                    found = list(cursor.fetchall())
                    if found:
                        marks = ", ".join(["%s"] * len(found))
                        cursor.execute(
                            f"UPDATE {table} SET {q('lease_owner')} = %s, {q('lease_expires_at')} = %s, "
                            f"{q('delivery_count')} = {q('delivery_count')} + 1 "
                            f"WHERE {q('id')} IN ({marks})",
                            [*lease, *(row[0] for row in found)],
                        )
                    cursor.execute("COMMIT")
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
        except (OperationalError, InterfaceError):
            self._drop_consumer_db()
            raise
        return [(row[0], row[1], row[2] + 1, row[3]) for row in found]

    def _payload(self, row_id: int, payload: str, delivery_count: int) -> dict[str, Any]:
        raw: dict[str, Any] = json.loads(payload)
        props = raw.setdefault("properties", {})
        props["delivery_tag"] = row_id
        props["delivery_count"] = delivery_count
        if delivery_count > 1:
            raw["redelivered"] = True
        return raw

    def _in(self, tags: list[Any]) -> str:
        return ", ".join(["%s"] * len(tags))

    def _ack(self, tags: list[Any], owner_prefix: str) -> None:
        if owner_prefix != self.owner:  # a dead child's messages, settled by its parent (rare)
            QueueMessage.objects.using(self.alias).filter(
                id__in=tags, lease_owner__startswith=owner_prefix
            ).delete()
            return
        q = self._quote
        self._execute(
            f"DELETE FROM {q(_table())} WHERE {q('id')} IN ({self._in(tags)}) "
            f"AND {q('lease_owner')} = %s",
            [*tags, self.owner],
        )

    def folded_ack(self, tag: Any) -> FoldedAck | None:
        """Return the ack of ``tag`` as SQL for a write on this alias to run in its own statement.

        PostgreSQL only (a writable CTE); the same fenced ``DELETE`` as :meth:`_ack`, run by the
        caller's connection (the results' one) instead of this channel's.
        """
        if self._folded_delete is None:
            db = connections[self.alias]
            q = db.ops.quote_name
            self._folded_delete = (
                f"DELETE FROM {q(_table())} WHERE {q('id')} = %s AND {q('lease_owner')} = %s"
                if db.vendor == "postgresql"
                else ""
            )
        if not self._folded_delete:
            return None
        return FoldedAck(
            alias=self.alias,
            delete=self._folded_delete,
            params=(tag, self.owner),
            settled=partial(self.qos.settled, tag),
        )

    def _release(self, tags: list[Any], *, undeliver: bool) -> None:
        q = self._quote
        count = f", {q('delivery_count')} = {q('delivery_count')} - 1" if undeliver else ""
        self._execute(
            f"UPDATE {q(_table())} SET {q('lease_owner')} = NULL, {q('lease_expires_at')} = NULL{count} "
            f"WHERE {q('id')} IN ({self._in(tags)}) AND {q('lease_owner')} = %s",
            [*tags, self.owner],
        )

    def _renew(self, tags: list[Any]) -> None:
        q = self._quote
        expires = timezone.now() + dt.timedelta(seconds=self.lease_seconds)
        self._execute(
            f"UPDATE {q(_table())} SET {q('lease_expires_at')} = %s "
            f"WHERE {q('id')} IN ({self._in(tags)}) AND {q('lease_owner')} = %s",
            [self._adapt(self.consumer_db, expires), *tags, self.owner],
        )

    def delayed_messages(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        rows = (
            QueueMessage.objects.using(self.alias)
            .filter(not_before__gt=timezone.now(), lease_owner__isnull=True)
            .order_by("not_before")
            .values_list("queue", "payload")[:limit]
        )
        return [(queue, json.loads(payload)) for queue, payload in rows]

    def release_owner_prefix(self, prefix: str, running: Collection[Any] = ()) -> int:
        leased = QueueMessage.objects.using(self.alias).filter(lease_owner__startswith=prefix)
        prefetched = leased.exclude(id__in=list(running)).update(
            lease_owner=None, lease_expires_at=None, delivery_count=F("delivery_count") - 1
        )
        return prefetched + leased.update(lease_owner=None, lease_expires_at=None)

    def leased_payload(self, prefix: str, tag: Any) -> dict[str, Any] | None:
        row = (
            QueueMessage.objects.using(self.alias)
            .filter(id=tag, lease_owner__startswith=prefix)
            .values_list("payload", "delivery_count")
            .first()
        )
        return None if row is None else self._payload(int(tag), row[0], row[1])

    # -- waiting -----------------------------------------------------------------------------
    def wait(self, timeout: float) -> None:
        self.flush_acks()  # idle: no claim to carry them soon
        db = self.consumer_db
        if db.vendor != "postgresql" or self.is_pooled:
            super().wait(timeout)
            return
        with self._lock:
            if not self._listening:
                self._execute(f"LISTEN {NOTIFY_CHANNEL}")
                db.connection.add_notify_handler(self._on_notify)
                self._listening = True
            if self._notified:
                self._notified = False
                return
            raw = db.connection
        try:
            ready, _, _ = select.select([raw.fileno()], [], [], timeout)
        except (OSError, ValueError):  # the connection was closed under us
            self._drop_consumer_db()
            return
        if ready:
            with self._lock:
                # Read the notification off the socket without a round trip to the server.
                pgconn = raw.pgconn
                pgconn.consume_input()
                while pgconn.notifies() is not None:
                    pass
                self._notified = False

    def _on_notify(self, notify: Any) -> None:
        self._notified = True

    def close(self) -> None:
        super().close()
        self._drop_consumer_db()


class Transport(LeasedTransport):
    """The ``django://`` transport."""

    Channel = Channel
    driver_type = "sql"
    driver_name = "django"
    #: kombu hands the URL over as is: the query string carries ``alias``, not a host
    can_parse_url = True
    connection_errors = (OperationalError, InterfaceError)
    channel_errors = (DatabaseError,)

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.alias = self._alias_from(client)

    @staticmethod
    def _alias_from(client: Any) -> str:
        """Return the alias of ``transport_options``, else of the URL (``django://?alias=…``)."""
        alias = client.transport_options.get("alias")
        url = client.hostname or ""
        if not alias and "://" in url:
            alias = dict(parse_qsl(urlsplit(url).query)).get("alias")
        return str(alias or "default")

    def establish_connection(self) -> Any:
        if self.alias not in connections:
            raise OperationalError(
                f"django:// names database alias {self.alias!r}, which is not in DATABASES"
            )
        return super().establish_connection()

    def driver_version(self) -> str:
        return connections[self.alias].vendor
