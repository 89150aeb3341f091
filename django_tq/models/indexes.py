"""An index that is partial where the database has partial indexes, and full elsewhere."""

from __future__ import annotations

from typing import Any

from django.db import models


class PartialIndex(models.Index):
    """``models.Index(condition=where)`` on PostgreSQL and SQLite; a full index on MySQL and
    MariaDB, which have no partial indexes.

    A plain ``condition`` would do the same there, with a system check warning (``models.W037``)
    at every ``migrate`` of a MariaDB project. Queries that imply ``where`` (``= value`` implies
    ``IS NOT NULL``) use the index either way.
    """

    def __init__(self, *args: Any, where: models.Q, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.where = where

    def _get_condition_sql(self, model: Any, schema_editor: Any) -> str | None:
        if not schema_editor.connection.features.supports_partial_indexes:
            return None
        index = models.Index(fields=list(self.fields), name=self.name, condition=self.where)
        return index._get_condition_sql(model, schema_editor)  # type: ignore[attr-defined]

    def deconstruct(self) -> Any:
        path, args, kwargs = super().deconstruct()
        kwargs["where"] = self.where
        return path, args, kwargs
