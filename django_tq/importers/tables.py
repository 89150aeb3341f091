"""Another app's table, read in id order: through its model when the app is installed, else SQL.

django-celery-beat and django-celery-results need not be installed for their rows to be
imported: a project that dropped them from ``INSTALLED_APPS`` (or never had them in this
database's project) still has their tables. :class:`SourceTable` reads either way and returns
plain dicts of column values with the same Python types (aware datetimes, booleans), so an
importer has one code path. Columns an older version of the app lacks read as ``None``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connections
from django.db.models import Model
from django.utils.dateparse import parse_datetime


class SourceMissing(Exception):
    """The other app's table is not in the database the import reads."""


def _aware(value: Any) -> dt.datetime | None:
    """Return a datetime column read with SQL as Django's ORM would (aware, in UTC, if USE_TZ)."""
    if value is None:
        return None
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None:
            raise ValueError(f"not a date and time: {value!r}")
        value = parsed
    if not isinstance(value, dt.datetime):
        raise ValueError(f"not a date and time: {value!r}")
    if settings.USE_TZ and value.tzinfo is None:
        # Django stores UTC in columns without a time zone (SQLite, MySQL) when USE_TZ is on.
        return value.replace(tzinfo=dt.UTC)
    return value


class SourceTable:
    """One table of another app on database ``alias``, read in batches in ``id`` order.

    ``datetimes`` and ``booleans`` name the columns to convert when reading with SQL (the ORM
    converts them itself).
    """

    def __init__(
        self,
        *,
        app_label: str,
        model_name: str,
        table: str,
        alias: str,
        datetimes: Iterable[str] = (),
        booleans: Iterable[str] = (),
    ) -> None:
        self.app_label = app_label
        self.table = table
        self.alias = alias
        self.datetimes = frozenset(datetimes)
        self.booleans = frozenset(booleans)
        self.model: type[Model] | None = None
        if apps.is_installed(app_label):
            try:
                self.model = apps.get_model(app_label, model_name)
            except LookupError:  # a version of the app without this model: read the table
                pass
        self._columns: frozenset[str] | None = None

    @property
    def connection(self) -> Any:
        """Return the connection of the alias the table is read from."""
        return connections[self.alias]

    @property
    def via(self) -> str:
        """Return how rows are read, for reports: ``its models`` or ``plain SQL``."""
        if self.model is not None:
            return f"{self.app_label}'s models"
        return f"plain SQL (table {self.table}; {self.app_label} is not installed)"

    def exists(self) -> bool:
        """Return whether the table exists on the alias."""
        with self.connection.cursor() as cursor:
            return self.table in self.connection.introspection.table_names(cursor)

    def missing(self, what: str) -> SourceMissing:
        """Return the error saying the table of ``what`` (``"django-celery-beat periodic
        tasks"``) is not in the database read."""
        return SourceMissing(
            f"No {what} in database {self.alias!r}: its table {self.table} does not exist there"
            + (
                ""
                if self.model
                else f" ({self.app_label} is not installed, so the table was looked up)"
            )
            + ". Pass --database to read another database."
        )

    def columns(self) -> frozenset[str]:
        """Return the table's column names (the model's, when the app is installed)."""
        if self._columns is None:
            if self.model is not None:
                names = {str(f.column) for f in self.model._meta.concrete_fields}
            else:
                with self.connection.cursor() as cursor:
                    description = self.connection.introspection.get_table_description(
                        cursor, self.table
                    )
                names = {str(column.name) for column in description}
            self._columns = frozenset(names)
        return self._columns

    def count(self) -> int:
        """Return how many rows the table has."""
        if self.model is not None:
            return self.model._default_manager.using(self.alias).count()
        with self.connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {self._quote(self.table)}")
            return int(cursor.fetchone()[0])

    def rows(
        self, columns: Iterable[str], *, after: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Return ``columns`` of the rows whose id is above ``after``, at most ``limit``, by id.

        Every row has every requested column: those the table lacks are ``None``.
        """
        wanted = list(dict.fromkeys(["id", *columns]))
        present = [name for name in wanted if name in self.columns()]
        if self.model is not None:
            fields = {f.column: f.attname for f in self.model._meta.concrete_fields}
            queryset = self.model._default_manager.using(self.alias).order_by("pk")
            if after is not None:
                queryset = queryset.filter(pk__gt=after)
            values = queryset.values_list(*(fields[name] for name in present))
            found = [dict(zip(present, row, strict=True)) for row in values[:limit]]
        else:
            found = [self._convert(row) for row in self._select(present, after, limit)]
        for row in found:
            for name in wanted:
                row.setdefault(name, None)
        return found

    def batches(self, columns: Iterable[str], *, size: int) -> Iterator[list[dict[str, Any]]]:
        """Yield every row in ``id`` order, ``size`` at a time (keyset paging: no offsets)."""
        columns = list(columns)
        after: int | None = None
        while True:
            batch = self.rows(columns, after=after, limit=size)
            if not batch:
                return
            yield batch
            after = batch[-1]["id"]

    def _quote(self, name: str) -> str:
        return str(self.connection.ops.quote_name(name))

    def _select(
        self, present: list[str], after: int | None, limit: int | None
    ) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(map(self._quote, present))} FROM {self._quote(self.table)}"
        params: list[Any] = []
        if after is not None:
            sql += f" WHERE {self._quote('id')} > %s"
            params.append(after)
        sql += f" ORDER BY {self._quote('id')}"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [dict(zip(present, row, strict=True)) for row in cursor.fetchall()]

    def _convert(self, row: dict[str, Any]) -> dict[str, Any]:
        for name in self.datetimes & row.keys():
            row[name] = _aware(row[name])
        for name in self.booleans & row.keys():
            if row[name] is not None:
                row[name] = bool(row[name])
        return row
