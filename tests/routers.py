"""The test suite's database router: ``other`` is a second alias of the default database."""

from __future__ import annotations

from typing import Any


class MigrateDefaultOnly:
    """Migrate ``default`` only: ``other`` reaches the same tables through a connection of its own
    (and holds no outbox of its own: the relay reads ``default``)."""

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == "default"
