"""Where task states and return values live: the database, a Django cache, or nowhere.

``TQ["RESULT_BACKEND"]`` picks one: ``"django-db"`` (the ``TaskResult`` model), ``"django-cache"``
or ``"django-cache://<alias>"`` (a Django cache such as django-redis), or ``None``. Every backend
has the same small contract.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import caches
from django.db import IntegrityError, connections, router, transaction
from django.db.models.constants import OnConflict
from django.utils import timezone

from django_tq import serialization, states
from django_tq.conf import on_reload, tq_settings
from django_tq.exceptions import Superseded
from django_tq.folded_ack import FoldedAck
from django_tq.message import TaskMessage
from django_tq.models import TaskResult
from django_tq.redis_results import RedisResults, new_record

#: PostgreSQL: the call that makes the statement's own transaction skip the WAL flush
WITHOUT_FLUSH_SETTING = "set_config('synchronous_commit', 'off', true)"
#: PostgreSQL: a FROM item that makes the statement's own transaction skip the WAL flush
WITHOUT_FLUSH = f"(SELECT {WITHOUT_FLUSH_SETTING}) AS without_flush"


@dataclass(frozen=True, kw_only=True, slots=True)
class ResultData:
    """What a backend knows about one task id."""

    task_id: str
    state: str
    task_name: str = ""
    result: Any = None
    traceback: str = ""
    meta: dict[str, Any] | None = None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    queue: str = ""
    priority: int | None = None
    worker: str = ""
    retries: int = 0
    delivery_count: int = 0
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    eta: dt.datetime | None = None
    date_created: dt.datetime | None = None
    date_started: dt.datetime | None = None
    date_done: dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ResultBackend:
    """The contract every result backend fills."""

    def mark_queued(
        self, message: TaskMessage, *, owner_id: Any = None, durable: bool = True
    ) -> None:
        """Record that ``message`` was enqueued (state QUEUED).

        ``durable=False``: the caller commits a durable write on a database for which
        :meth:`is_durable_with` is true right after (the ``django://`` message row), or
        :meth:`rebuilds_queued` is true, so this write need not wait to be durable on its own.
        """
        self.mark_queued_many([(message, owner_id)], durable=durable)

    def mark_queued_many(
        self, queued: Sequence[tuple[TaskMessage, Any]], *, durable: bool = True
    ) -> None:
        """Record ``(message, owner_id)`` pairs as enqueued, in as few writes as the store takes."""

    def writes_on(self, alias: str) -> bool:
        """Return whether this backend's writes belong to database ``alias``'s transactions."""
        return False

    def rebuilds_queued(self, owner_id: Any) -> bool:
        """Return whether a lost ``QUEUED`` record comes back whole with the task's first write.

        True where the worker's first write for the task (``STARTED``, or its final state
        without ``TRACK_STARTED``) creates a missing record from the message alone, and the
        record holds nothing the message does not carry (no ``owner_id``): a ``QUEUED`` write
        outside a transaction then need not wait to be durable.
        """
        return False

    def mark_started(self, message: TaskMessage, *, worker: str, delivery_count: int) -> bool:
        """Record that a worker started ``message``; return False if the task already finished."""
        return True

    def store(
        self,
        message: TaskMessage,
        state: str,
        *,
        result: Any = None,
        traceback: str = "",
        meta: dict[str, Any] | None = None,
        worker: str = "",
        delivery_count: int = 0,
        durable: bool = True,
        fenced: bool = False,
        ack: FoldedAck | None = None,
    ) -> None:
        """Record ``state`` (and the result or error data) for ``message``.

        ``durable=False``: the caller acks the message afterwards in a database for which
        :meth:`is_durable_with` is true, so the write need not wait to be durable on its own.
        ``fenced=True``: this execution wrote STARTED with ``delivery_count``; record only if
        that is still the latest delivery, else raise :class:`~django_tq.exceptions.Superseded`
        (a newer delivery took the message over while this one was cut off). The database
        backend fences; the cache backend, whose writes are not conditional, does not.
        ``ack``: the message's ``django://`` ack, which the database backend runs in the same
        statement as the write where it can (PostgreSQL, the same alias, outside a transaction;
        then ``ack.settled()`` is called), and only if the write is recorded. Otherwise the
        caller acks as usual.
        """

    def is_durable_with(self, database_alias: str | None) -> bool:
        """Return whether a write here is durable whenever a later commit on that alias is.

        True for the table on PostgreSQL and the same alias (one write-ahead log, flushed in
        order): a final state written just before the ``django://`` ack of its message cannot
        be lost while the ack is kept.
        """
        return False

    def set_state(
        self, task_id: str, state: str, *, result: Any = None, traceback: str = ""
    ) -> None:
        """Set the state of a known id without a message (publish failures, dead letters)."""

    def get(self, task_id: str) -> ResultData | None:
        """Return what is known about ``task_id``, or ``None`` for an unknown id."""
        return None

    def forget(self, task_id: str) -> None:
        """Delete what is stored for ``task_id``."""

    def children(self, task_id: str) -> list[str]:
        """Return the ids of the tasks ``task_id`` applied (empty where the backend cannot list)."""
        return []

    def cleanup(self, expired_before: dt.datetime, *, batch_size: int = 1000) -> int:
        """Delete up to ``batch_size`` final results done before ``expired_before``; return count."""
        return 0


def _row_fields(message: TaskMessage) -> dict[str, Any]:
    """Return the columns of a new result row that ``message`` itself gives."""
    return {
        "task_id": message.id,
        "task_name": message.task,
        "args": _json(list(message.args)),
        "kwargs": _json(message.kwargs),
        "queue": message.queue,
        "priority": message.priority,
        "parent_id": message.parent_id,
        "root_id": message.root_id,
        "group_id": message.group_id,
        "eta": message.eta,
        "expires": message.expires,
    }


def _json(value: Any) -> Any:
    return serialization.to_jsonable(value)


#: which of the message's rows a write may change (``_Rows.kind``)
ROW, UNFINISHED, LATEST = "row", "unfinished", "latest"


@dataclass(frozen=True, slots=True)
class _Rows:
    """The message's row, as one of the hot writes targets it."""

    alias: str
    task_id: str
    #: ``ROW``: the row; ``UNFINISHED``: only if not in a final state; ``LATEST``: only if its
    #: ``delivery_count`` is still ``delivery_count`` (a fenced write)
    kind: str = ROW
    delivery_count: int = 0


class _Statements:
    """The SQL of the hot result writes for one database connection's vendor, built once.

    The ORM built each ``UPDATE`` and ``INSERT`` on every task (``QuerySet.update`` → compiler:
    most of a millisecond of CPU); this builds the text of each shape once and binds only the
    values, each prepared by its field (``get_db_prep_save``: JSON adaptation, datetimes as the
    vendor and ``USE_TZ`` want them), as the compiler would. ``None`` is written as ``= NULL``
    and ``JSONField`` ``None`` is SQL ``NULL``, as with ``QuerySet.update``.
    """

    def __init__(self, db: Any) -> None:
        qn = db.ops.quote_name
        meta = TaskResult._meta
        self.vendor: str = db.vendor
        self.table = qn(meta.db_table)
        self.fields = {f.name: f for f in meta.concrete_fields}
        self.columns = {f.name: qn(f.column) for f in meta.concrete_fields}
        ready = ", ".join(["%s"] * len(states.READY_STATES))
        state, task_id = self.columns["state"], self.columns["task_id"]
        self.where = {
            ROW: f"{task_id} = %s",
            UNFINISHED: f"{task_id} = %s AND NOT ({state} IN ({ready}))",
            LATEST: f"{task_id} = %s AND {self.columns['delivery_count']} = %s",
        }
        self.ready_params = tuple(states.READY_STATES)
        self.insert_fields = [f for f in meta.concrete_fields if not f.primary_key]
        #: what the ORM writes for a column the row does not set (all constants here)
        self.insert_defaults = {f.attname: f.get_default() for f in self.insert_fields}
        on_conflict = db.ops.on_conflict_suffix_sql(
            self.insert_fields, OnConflict.IGNORE, None, None
        )
        self.insert_head = (
            f"{db.ops.insert_statement(on_conflict=OnConflict.IGNORE)} {self.table} "
            f"({', '.join(qn(f.column) for f in self.insert_fields)}) VALUES "
        )
        self.insert_row = f"({', '.join(['%s'] * len(self.insert_fields))})"
        self.insert_tail = f" {on_conflict}" if on_conflict else ""
        self._updates: dict[tuple[Any, ...], str] = {}

    def update(
        self, names: tuple[tuple[str, bool], ...], kind: str, without_flush: bool, ack: str
    ) -> str:
        """Return the ``UPDATE`` of columns ``names`` (``(name, is None)``) on rows ``kind``.

        ``without_flush`` (PostgreSQL): its transaction skips the WAL flush. ``ack``: the
        ``DELETE`` of a folded ack (PostgreSQL), run only if the update changed a row.
        """
        key = (names, kind, without_flush, ack)
        sql = self._updates.get(key)
        if sql is None:
            sets = ", ".join(
                f"{self.columns[name]} = NULL" if null else f"{self.columns[name]} = %s"
                for name, null in names
            )
            sql = f"UPDATE {self.table} SET {sets}"
            if without_flush:
                sql = f"{sql} FROM {WITHOUT_FLUSH}"
            sql = f"{sql} WHERE {self.where[kind]}"
            if ack:
                # One statement, one commit: the message is deleted only with its final state.
                sql = (
                    f"WITH done AS ({sql} RETURNING 1), "
                    f"acked AS ({ack} AND EXISTS (SELECT 1 FROM done)) "
                    "SELECT count(*) FROM done"
                )
            self._updates[key] = sql
        return sql


_statements: dict[tuple[str, str], _Statements] = {}


def _statements_for(db: Any) -> _Statements:
    """Return the statements of connection ``db`` (one set per alias and vendor a process)."""
    key = (db.alias, db.vendor)
    built = _statements.get(key)
    if built is None:
        built = _statements[key] = _Statements(db)
    return built


class DatabaseBackend(ResultBackend):
    """Results in the ``TaskResult`` model (the default)."""

    def _alias(self) -> str:
        return router.db_for_write(TaskResult) or "default"

    def writes_on(self, alias: str) -> bool:
        return self._alias() == alias

    def rebuilds_queued(self, owner_id: Any) -> bool:
        # STARTED (or the final state) upserts a missing row from the message (``_upsert``):
        # every column but ``date_created`` (then the start) and ``owner_id`` (in no message).
        return owner_id is None

    def mark_queued_many(
        self, queued: Sequence[tuple[TaskMessage, Any]], *, durable: bool = True
    ) -> None:
        alias = self._alias()
        db = connections[alias]
        sql = _statements_for(db)
        rows: list[list[Any]] = []
        now = timezone.now()  # auto_now_add
        for message, owner_id in queued:
            if message.retries:
                # A retry reuses its id: the row exists and goes back to QUEUED.
                self._update(
                    _Rows(alias, message.id),
                    {
                        "state": states.QUEUED,
                        "eta": message.eta,
                        "retries": message.retries,
                        "date_done": None,
                    },
                    durable=durable,
                )
                continue
            values = {
                **sql.insert_defaults,
                **_row_fields(message),
                "state": states.QUEUED,
                "retries": message.retries,
                "owner_id": owner_id,
                "date_created": now,
            }
            rows.append([f.get_db_prep_save(values.get(f.attname), db) for f in sql.insert_fields])
        # A known id keeps its row: sending it again is a copy, which a worker skips if the
        # task already ran (the task id is an idempotency key). One INSERT for a whole burst.
        if not rows:
            return
        size = max(1, db.ops.bulk_batch_size(sql.insert_fields, rows) or len(rows))
        batches = [rows[i : i + size] for i in range(0, len(rows), size)]
        # A data-modifying WITH runs whatever the outer query reads; the outer SELECT turns the
        # flush off for this statement's own transaction (the next durable commit flushes it).
        without_flush = (
            not durable and db.vendor == "postgresql" and not db.in_atomic_block
        ) and len(batches) == 1
        with (
            transaction.atomic(using=alias, savepoint=False) if len(batches) > 1 else nullcontext()
        ):
            for batch in batches:
                statement = (
                    f"{sql.insert_head}{', '.join([sql.insert_row] * len(batch))}{sql.insert_tail}"
                )
                if without_flush:
                    statement = f"WITH queued AS ({statement}) SELECT {WITHOUT_FLUSH_SETTING}"
                self._execute(db, statement, [value for row in batch for value in row])

    @staticmethod
    def _execute(db: Any, sql: str, params: Sequence[Any]) -> Any:
        """Run ``sql`` on ``db``; return the cursor's ``(rowcount, first row or None)``."""
        if db.in_atomic_block:
            # As QuerySet.update: an error here marks the caller's transaction for rollback.
            with transaction.mark_for_rollback_on_error(using=db.alias), db.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.rowcount, (cursor.fetchone() if cursor.description else None)
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount, (cursor.fetchone() if cursor.description else None)

    def mark_started(self, message: TaskMessage, *, worker: str, delivery_count: int) -> bool:
        values = {
            "state": states.STARTED,
            "worker": worker,
            "delivery_count": delivery_count,
            "date_started": timezone.now(),
        }
        # Refusing a finished task costs no query of its own. STARTED does not wait for the
        # flush: the task's final state, written durably or just before its ack, flushes it.
        alias = self._alias()
        unfinished = _Rows(alias, message.id, UNFINISHED)
        if self._update(unfinished, values, durable=False):
            return True
        rows = TaskResult.objects.using(alias).filter(task_id=message.id)
        if rows.filter(state__in=states.READY_STATES).exists():
            return False  # finished already: a second copy of the message must not run
        # No row when the UPDATE ran. One may have been committed since (the QUEUED row of a
        # message published before its producer's commit): start it unless it finished.
        return self._upsert(message, values, only=unfinished)

    def is_durable_with(self, database_alias: str | None) -> bool:
        alias = self._alias()
        return database_alias == alias and connections[alias].vendor == "postgresql"

    def _update(
        self, rows: _Rows, values: dict[str, Any], *, durable: bool, ack: FoldedAck | None = None
    ) -> int:
        """Update ``rows`` with ``values``; return how many rows it changed (matched, on MySQL).

        ``durable=False``, on PostgreSQL outside a transaction: the one statement commits
        without waiting for the WAL flush (``synchronous_commit`` off for its own transaction
        only). The write is visible at once and durable with the next durable commit of the
        server (or its WAL writer, within a fraction of a second); only a server crash before
        then forgets it. See "Commits that do not wait for the flush" in docs/reliability.md.

        ``ack`` (PostgreSQL, outside a transaction): the same statement also runs the ack's
        ``DELETE``, only if the update changed a row, and calls ``ack.settled()`` if it did.
        """
        db = connections[rows.alias]
        sql = _statements_for(db)
        direct = sql.vendor == "postgresql" and not db.in_atomic_block
        if not direct:
            ack = None
        names = tuple((name, value is None) for name, value in values.items())
        params = [
            sql.fields[name].get_db_prep_save(value, db)
            for name, value in values.items()
            if value is not None
        ]
        params.append(rows.task_id)
        if rows.kind == UNFINISHED:
            params.extend(sql.ready_params)
        elif rows.kind == LATEST:
            params.append(rows.delivery_count)
        statement = sql.update(names, rows.kind, direct and not durable, ack.delete if ack else "")
        if ack is not None:
            params.extend(ack.params)
        rowcount, first = self._execute(db, statement, params)
        changed = int(first[0]) if ack is not None else int(rowcount)
        if ack is not None and changed:
            ack.settled()
        return changed

    def store(
        self,
        message: TaskMessage,
        state: str,
        *,
        result: Any = None,
        traceback: str = "",
        meta: dict[str, Any] | None = None,
        worker: str = "",
        delivery_count: int = 0,
        durable: bool = True,
        fenced: bool = False,
        ack: FoldedAck | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "state": state,
            "result": _json(result),
            "traceback": traceback,
            "meta": _json(meta) if meta is not None else None,
            "retries": message.retries,
        }
        if worker:
            values["worker"] = worker
        if delivery_count:
            values["delivery_count"] = delivery_count
        if state in states.READY_STATES:
            values["date_done"] = timezone.now()
        alias = self._alias()
        if ack is not None and ack.alias != alias:
            ack = None
        if fenced and delivery_count:
            # The same one UPDATE, only where this execution's STARTED is still the latest.
            latest = _Rows(alias, message.id, LATEST, delivery_count)
            if self._update(latest, values, durable=durable, ack=ack):
                return
            if TaskResult.objects.using(alias).filter(task_id=message.id).exists():
                raise Superseded(
                    f"Task {message.id} was taken over by a newer delivery while delivery "
                    f"{delivery_count} ran: its outcome ({state}) is not recorded."
                )
        elif ack is not None and self._update(
            _Rows(alias, message.id), values, durable=durable, ack=ack
        ):
            return
        # No row to update (or a refused fence, raised above): the caller acks after this.
        self._upsert(message, values, durable=durable)

    def _upsert(
        self,
        message: TaskMessage,
        values: dict[str, Any],
        *,
        durable: bool = True,
        only: _Rows | None = None,
    ) -> bool:
        """Write ``values`` into the message's row, creating it if there is none.

        ``only``: the rows that may be updated (the message's row, or only if unfinished);
        return False if the row exists but is not among them.
        """
        alias = self._alias()
        rows = only if only is not None else _Rows(alias, message.id)
        if self._update(rows, values, durable=durable):
            return True
        create = {**_row_fields(message), **values}
        try:
            with transaction.atomic(using=alias):
                TaskResult.objects.using(alias).create(**create)
        except IntegrityError:
            return bool(self._update(rows, values, durable=True))
        return True

    def set_state(
        self, task_id: str, state: str, *, result: Any = None, traceback: str = ""
    ) -> None:
        values: dict[str, Any] = {"state": state, "result": _json(result), "traceback": traceback}
        if state in states.READY_STATES:
            values["date_done"] = timezone.now()
        TaskResult.objects.using(self._alias()).filter(task_id=task_id).update(**values)

    def get(self, task_id: str) -> ResultData | None:
        row = TaskResult.objects.using(self._alias()).filter(task_id=task_id).first()
        if row is None:
            return None
        return ResultData(
            task_id=row.task_id,
            state=row.state,
            task_name=row.task_name,
            result=serialization.from_jsonable(row.result),
            traceback=row.traceback,
            meta=serialization.from_jsonable(row.meta),
            args=serialization.from_jsonable(row.args),
            kwargs=serialization.from_jsonable(row.kwargs),
            queue=row.queue,
            priority=row.priority,
            worker=row.worker,
            retries=row.retries,
            delivery_count=row.delivery_count,
            parent_id=row.parent_id,
            root_id=row.root_id,
            group_id=row.group_id,
            eta=row.eta,
            date_created=row.date_created,
            date_started=row.date_started,
            date_done=row.date_done,
        )

    def forget(self, task_id: str) -> None:
        TaskResult.objects.using(self._alias()).filter(task_id=task_id).delete()

    def children(self, task_id: str) -> list[str]:
        rows = TaskResult.objects.using(self._alias()).filter(parent_id=task_id)
        return list(rows.order_by("date_created", "id").values_list("task_id", flat=True))

    def cleanup(self, expired_before: dt.datetime, *, batch_size: int = 1000) -> int:
        alias = self._alias()
        ids = list(
            TaskResult.objects.using(alias)
            .done_before(expired_before)
            .order_by("date_done")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return 0
        deleted, _ = TaskResult.objects.using(alias).filter(pk__in=ids).delete()
        return deleted


class CacheBackend(ResultBackend):
    """Results in a Django cache (e.g. django-redis): fast, expiring, not listable.

    Writing never reads the cache, except to refuse a finished task at ``STARTED``: the record
    is built from the message, and a task's final record takes its dates from the ``STARTED``
    record this process wrote (kept here until the task finishes). On a Redis cache
    (:mod:`django_tq.redis_results`) ``STARTED`` is one script call that refuses, keeps the
    ``QUEUED`` record's ``date_created`` and writes, with no read on the client; other caches
    read, then write.
    """

    prefix = "django_tq:result:"
    #: the most ``STARTED`` records kept for tasks running in this process (a task whose
    #: outcome is never stored, e.g. ``Ignore``, leaves its record until it is pushed out)
    started_records = 256

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self._started: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._redis: RedisResults | None = None
        self._redis_known = False

    @property
    def cache(self) -> Any:
        """Return the Django cache this backend writes to."""
        return caches[self.alias]

    @property
    def redis(self) -> RedisResults | None:
        """Return the raw Redis records of the cache, or ``None`` when it is no Redis cache."""
        if not self._redis_known:  # the backend is built again when TQ or CACHES change
            self._redis = RedisResults.of(self.cache, timeout=self._timeout())
            self._redis_known = True
        return self._redis

    def _timeout(self) -> float | None:
        expires = tq_settings.RESULT_EXPIRES
        return expires.total_seconds() if expires is not None else None

    def _write(self, record: dict[str, Any], *, keep_existing: bool = False) -> None:
        """Write ``record``; with ``keep_existing``, only if nothing is stored for its id yet."""
        key = self.prefix + record["task_id"]
        redis = self.redis
        if redis is not None:
            redis.write(key, record, keep_existing=keep_existing)
            return
        value = serialization.to_json(record)
        if keep_existing:
            self.cache.add(key, value, self._timeout())
        else:
            self.cache.set(key, value, self._timeout())

    def get(self, task_id: str) -> ResultData | None:
        record = self._read(task_id)
        return ResultData(**record) if record is not None else None

    def _read(self, task_id: str, raw: bytes | None = None) -> dict[str, Any] | None:
        """Return the stored record of ``task_id`` (``raw``: its raw Redis value, read already)."""
        redis = self.redis
        if redis is not None:
            if raw is None:
                raw = redis.read(self.prefix + task_id)
                if raw is None:
                    return None
            if RedisResults.is_ours(raw):
                record: dict[str, Any] = serialization.from_json(raw)
                return record
        # A record written by the cache API (on Redis: before django_tq wrote raw JSON there).
        value = self.cache.get(self.prefix + task_id)
        if value is None:
            return None
        record = serialization.from_json(value)
        return record

    def _message_data(
        self, message: TaskMessage, state: str, base: dict[str, Any] | None, **values: Any
    ) -> dict[str, Any]:
        """Return the record of ``message`` in ``state``, keeping what ``base`` knew."""
        record = new_record(state)
        if base is not None:
            record.update(base)
        record.update(
            task_id=message.id,
            state=state,
            task_name=message.task,
            args=list(message.args),
            kwargs=message.kwargs,
            queue=message.queue,
            priority=message.priority,
            retries=message.retries,
            parent_id=message.parent_id,
            root_id=message.root_id,
            group_id=message.group_id,
            eta=message.eta,
            **values,
        )
        if record["date_created"] is None:
            record["date_created"] = message.sent_at or timezone.now()
        return record

    def mark_queued_many(
        self, queued: Sequence[tuple[TaskMessage, Any]], *, durable: bool = True
    ) -> None:
        # A known id keeps its record, as in the table: sending it again is a copy, which a
        # worker skips if the task already ran. A retry reuses its id and goes back to QUEUED.
        now = timezone.now()
        records = [
            (self._message_data(message, states.QUEUED, None, date_created=now), message)
            for message, _owner_id in queued
        ]
        redis = self.redis
        if redis is not None and len(records) > 1:
            redis.write_many(
                (self.prefix + message.id, record, not message.retries)
                for record, message in records
            )
            return
        for record, message in records:
            self._write(record, keep_existing=not message.retries)

    def mark_started(self, message: TaskMessage, *, worker: str, delivery_count: int) -> bool:
        started = {
            "worker": worker,
            "delivery_count": delivery_count,
            "date_started": timezone.now(),
            "date_done": None,
        }
        redis = self.redis
        data: dict[str, Any] | None
        if redis is None:
            data = self._start_over(message, self._read(message.id), started)
        else:
            data = self._message_data(message, states.STARTED, None, **started)
            reply = redis.start(self.prefix + message.id, data)
            if reply is False:
                return False
            if isinstance(reply, list):  # a record the script leaves to us: merge it here
                data = self._start_over(message, self._read(message.id, reply[0]), started)
            else:  # written, with the stored QUEUED record's date_created
                data["date_created"] = serialization.from_json(reply)
        if data is None:
            return False
        with self._lock:  # the threads pool's consumers share this backend
            self._started[message.id] = data
            while len(self._started) > self.started_records:
                del self._started[next(iter(self._started))]
        return True

    def _start_over(
        self, message: TaskMessage, previous: dict[str, Any] | None, started: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Write the ``STARTED`` record over ``previous``; ``None`` if that one is finished."""
        if previous is not None and previous["state"] in states.READY_STATES:
            return None
        data = self._message_data(message, states.STARTED, previous, **started)
        self._write(data)
        return data

    def store(
        self,
        message: TaskMessage,
        state: str,
        *,
        result: Any = None,
        traceback: str = "",
        meta: dict[str, Any] | None = None,
        worker: str = "",
        delivery_count: int = 0,
        durable: bool = True,
        fenced: bool = False,
        ack: FoldedAck | None = None,
    ) -> None:
        values: dict[str, Any] = {"result": result, "traceback": traceback, "meta": meta}
        if worker:
            values["worker"] = worker
        if delivery_count:
            values["delivery_count"] = delivery_count
        if state in states.READY_STATES:
            values["date_done"] = timezone.now()
        with self._lock:
            if state in states.READY_STATES or state == states.RETRY:
                started = self._started.pop(message.id, None)
            else:  # a custom state (update_state): the task still runs here
                started = self._started.get(message.id)
        self._write(self._message_data(message, state, started, **values))

    def set_state(
        self, task_id: str, state: str, *, result: Any = None, traceback: str = ""
    ) -> None:
        previous = self._read(task_id)
        if previous is None:
            return
        record = new_record(state)
        record.update(previous)
        record.update(state=state, result=result, traceback=traceback)
        if state in states.READY_STATES:
            record["date_done"] = timezone.now()
        self._write(record)

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._started.pop(task_id, None)
        self.cache.delete(self.prefix + task_id)


class NullBackend(ResultBackend):
    """No results at all (``RESULT_BACKEND = None``): fire-and-forget."""


_backend: ResultBackend | None = None


def get_backend() -> ResultBackend:
    """Return the configured result backend (built once per settings load)."""
    global _backend
    if _backend is None:
        _backend = build_backend(tq_settings.RESULT_BACKEND)
    return _backend


def build_backend(spec: str | None) -> ResultBackend:
    """Build the backend named by a ``RESULT_BACKEND`` value."""
    if spec is None:
        return NullBackend()
    if spec == "django-db":
        return DatabaseBackend()
    if spec == "django-cache":
        return CacheBackend("default")
    return CacheBackend(spec.removeprefix("django-cache://"))


@on_reload
def _drop_backend() -> None:
    global _backend
    _backend = None
    _statements.clear()
