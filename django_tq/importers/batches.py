"""Imported rows written a batch at a time: compared with the rows here, then created or updated
in one transaction.

:func:`import_batch` takes the :class:`PlannedRow` rows of one batch (field values keyed like the
model's fields) for a :class:`Target` (which model, which key, which fields), reads the rows here
with the same keys, and creates the missing ones, updates the ones imported earlier that differ,
and leaves the rest: a row the target does not take as imported is skipped. Creation dates are
written as they were, not as the time of the import. When the database refuses a batch, its rows
are written one by one, so one bad row fails alone with the database's reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connections
from django.db.models import Model

from django_tq.importers.report import Action, RowOutcome
from django_tq.sqlite import write_atomic


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannedRow:
    """What one source row becomes: the field values, remarks, and remark themes to count."""

    key: str
    values: dict[str, Any]
    notes: tuple[str, ...] = ()
    themes: tuple[str, ...] = ()


@dataclass(kw_only=True, slots=True)
class Writes:
    """The rows a batch creates and updates, and the outcome of each source row."""

    create: list[Model] = field(default_factory=list)
    update: list[Model] = field(default_factory=list)
    outcomes: list[tuple[RowOutcome, tuple[str, ...]]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """One kind of row written: the model, its key field, the fields written, what marks an
    imported row (``None``: any row of that key is taken as the same one)."""

    model: type[Model]
    kind: str
    key: str
    fields: tuple[str, ...]
    is_imported: Callable[[Any], bool] | None = None


def _chunks(keys: list[str], alias: str) -> Iterator[list[str]]:
    """Yield ``keys`` in lists short enough for one ``IN`` (SQLite takes 999 parameters)."""
    size = connections[alias].features.max_query_params or len(keys) or 1
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def _decide(target: Target, planned: list[PlannedRow], alias: str) -> Writes:
    """Compare planned rows with the rows here; return what to create and update."""
    manager = target.model._default_manager.using(alias)
    existing = {
        getattr(row, target.key): row
        for chunk in _chunks([item.key for item in planned], alias)
        for row in manager.filter(**{f"{target.key}__in": chunk})
    }
    writes = Writes()
    for item in planned:
        row = existing.get(item.key)
        outcome = RowOutcome(
            kind=target.kind, key=item.key, action=Action.IMPORTED, notes=item.notes
        )
        if row is None:
            writes.create.append(target.model(**item.values))
        elif target.is_imported is not None and not target.is_imported(row):
            outcome = RowOutcome(
                kind=target.kind,
                key=item.key,
                action=Action.SKIPPED,
                reason=f"django_tq recorded a {target.kind} with this id itself",
            )
        else:
            changed = [name for name in target.fields if getattr(row, name) != item.values[name]]
            if not changed:
                outcome = RowOutcome(kind=target.kind, key=item.key, action=Action.UNCHANGED)
            else:
                for name in changed:
                    setattr(row, name, item.values[name])
                writes.update.append(row)
                outcome = RowOutcome(
                    kind=target.kind,
                    key=item.key,
                    action=Action.UPDATED,
                    notes=(f"changed: {', '.join(changed)}", *item.notes),
                )
        themes = item.themes if outcome.action in (Action.IMPORTED, Action.UPDATED) else ()
        writes.outcomes.append((outcome, themes))
    return writes


def _insert_as_is(target: Target, rows: list[Model], alias: str) -> None:
    """Insert ``rows`` with their values as set, creation dates included.

    ``bulk_create`` would stamp ``date_created`` (``auto_now_add``) with the time of the import,
    and setting it again afterwards with ``bulk_update`` costs more than the insert. This is a raw
    insert, the kind ``loaddata`` makes: values are written as they are, nothing is stamped.
    """
    options = target.model._meta
    fields = [field for field in options.concrete_fields if field is not options.auto_field]
    size = max(connections[alias].ops.bulk_batch_size(fields, rows), 1)
    queryset = target.model._default_manager.using(alias)
    for start in range(0, len(rows), size):
        queryset._insert(rows[start : start + size], fields=fields, raw=True, using=alias)  # type: ignore[attr-defined]


def _persist(target: Target, writes: Writes, alias: str) -> None:
    """Write a batch in one transaction."""
    with write_atomic(alias):
        if writes.create:
            _insert_as_is(target, writes.create, alias)
        if writes.update:
            target.model._default_manager.using(alias).bulk_update(writes.update, target.fields)


def import_batch(
    target: Target, planned: list[PlannedRow], alias: str, *, dry_run: bool
) -> list[tuple[RowOutcome, tuple[str, ...]]]:
    """Import one batch at once; if the database refuses it, row by row (so one bad row fails
    alone, with the database's reason)."""
    writes = _decide(target, planned, alias)
    if dry_run:
        return writes.outcomes
    try:
        _persist(target, writes, alias)
        return writes.outcomes
    except DatabaseError:
        pass
    outcomes = []
    for item in planned:
        try:
            single = _decide(target, [item], alias)
            _persist(target, single, alias)
            outcomes.extend(single.outcomes)
        except DatabaseError as exc:
            failed = RowOutcome(
                kind=target.kind, key=item.key, action=Action.FAILED, reason=str(exc)
            )
            outcomes.append((failed, ()))
    return outcomes
