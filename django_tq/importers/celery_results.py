"""django-celery-results' results, copied into django_tq's (``manage.py tqimport celery-results``).

``TaskResult`` rows become django_tq ``TaskResult`` rows with the same task id: name, state
(Celery's ``PENDING`` is ``QUEUED`` here — the id is known — and ``REJECTED`` is ``DEAD``; every
other state, custom ones included, is kept), result, traceback, arguments, worker and dates.
What has no column here goes to ``meta``: ``imported_from`` (which marks the row as imported),
``celery_state``, ``periodic_task_name``, Celery's own ``meta`` (its ``children``), and the
arguments' text when it could not be read as data. ``GroupResult`` rows become group results
with their member ids in order.

Values are read as JSON only (:mod:`django_tq.importers.celery_data`): a pickled result is
never unpickled but replaced by a note, and the report counts them.

Rows are read in id order, a batch at a time, each batch written in one transaction: an
interrupted import keeps the batches it wrote, and running it again finds those rows already
here (unchanged) and goes on with the rest. A row imported earlier whose source changed since
(a task that was running then has finished) is updated; a row django_tq recorded itself under
the same id is left alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connections, router
from django.db.models import Model
from django.utils import timezone

from django_tq import states
from django_tq.conf import tq_settings
from django_tq.importers import celery_data
from django_tq.importers.report import Action, Report, RowOutcome
from django_tq.importers.tables import SourceTable
from django_tq.models import GroupResult, TaskResult
from django_tq.serialization import has_nul
from django_tq.sqlite import write_atomic

SOURCE = "django-celery-results"
APP = "django_celery_results"
#: ``meta["imported_from"]`` of an imported task result
MARK = SOURCE
BATCH_SIZE = 1000
#: Celery states that mean something else here; every other state is kept as it is
STATES = {"PENDING": states.QUEUED, "REJECTED": states.DEAD}
TASK_KIND, GROUP_KIND = "task result", "group result"

TASK_COLUMNS = (
    "task_id", "task_name", "status", "content_type", "content_encoding", "result", "traceback",
    "meta", "task_args", "task_kwargs", "worker", "periodic_task_name", "date_created",
    "date_started", "date_done",
)  # fmt: skip
GROUP_COLUMNS = (
    "group_id",
    "content_type",
    "content_encoding",
    "result",
    "date_created",
    "date_done",
)
#: the fields of a django_tq row an import writes (and compares, on a later run)
TASK_FIELDS = (
    "task_name", "state", "args", "kwargs", "result", "traceback", "meta", "worker",
    "date_created", "date_started", "date_done",
)  # fmt: skip
GROUP_FIELDS = ("result_ids", "parent_id", "date_created", "date_done")
LENGTHS = {"task_id": 255, "group_id": 255, "task_name": 255, "state": 50, "worker": 255}


class Invalid(Exception):
    """The row cannot be imported as it is (the message says what is wrong)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Planned:
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


# -- mapping rows ----------------------------------------------------------------------------------
def _check(values: dict[str, Any], *, postgres: bool) -> None:
    for name, limit in LENGTHS.items():
        value = values.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise Invalid(f"{name} is longer than {limit} characters")
    if postgres and any(has_nul(value) for value in values.values()):
        raise Invalid("it holds the character U+0000, which PostgreSQL cannot store")


def _created(row: dict[str, Any]) -> dt.datetime:
    """Return when a row was created: ``date_created`` (django-celery-results 2.0 and later)
    or else ``date_done``, its last update (which every version has)."""
    created = row["date_created"] or row["date_done"]
    if created is None:
        raise Invalid("it has neither date_created nor date_done")
    return created


def plan_task(row: dict[str, Any], *, postgres: bool = False) -> Planned:
    """Return what a django-celery-results task result becomes here; raise ``Invalid``."""
    status = str(row["status"] or states.PENDING)
    state = STATES.get(status, status)
    content_type, encoding = row["content_type"], row["content_encoding"]
    result = celery_data.decode(row["result"], content_type, encoding, what="result")
    value = result.value
    if state in states.EXCEPTION_STATES and not result.note:
        value = celery_data.exception_data(value)
    meta: dict[str, Any] = {"imported_from": MARK, "celery_state": status}
    if row["periodic_task_name"]:
        meta["periodic_task_name"] = row["periodic_task_name"]
    celery_meta = celery_data.decode(row["meta"], content_type, encoding)
    if celery_meta.value is not None and not celery_meta.note:
        meta["celery_meta"] = celery_meta.value
    args, args_text = celery_data.arguments(row["task_args"], kind=list)
    kwargs, kwargs_text = celery_data.arguments(row["task_kwargs"], kind=dict)
    if args_text:
        meta["task_args_text"] = args_text
    if kwargs_text:
        meta["task_kwargs_text"] = kwargs_text
    values = {
        "task_id": str(row["task_id"]),
        "task_name": row["task_name"] or "",
        "state": state,
        "args": args,
        "kwargs": kwargs,
        "result": value,
        "traceback": row["traceback"] or "",
        "meta": meta,
        "worker": row["worker"] or "",
        "date_created": _created(row),
        "date_started": row["date_started"],
        "date_done": row["date_done"] if state in states.READY_STATES else None,
    }
    _check(values, postgres=postgres)
    notes: tuple[str, ...] = (result.note,) if result.note else ()
    themes: tuple[str, ...] = (result.theme,) if result.theme else ()
    if args_text or kwargs_text:
        notes += ("arguments kept as text in meta: neither JSON nor a repr of literals",)
        themes += ("arguments kept as text in meta",)
    return Planned(key=values["task_id"], values=values, notes=notes, themes=themes)


def _member_ids(value: Any) -> tuple[list[str], bool]:
    """Return the task ids of a Celery group tuple's members, nested groups' flattened, and
    whether there were nested groups."""
    ids: list[str] = []
    nested = False
    for member in value:
        if not isinstance(member, list) or len(member) != 2:
            raise Invalid(f"not a result tuple: {member!r}")
        node, children = member
        if children:
            nested = True
            ids.extend(_member_ids(children)[0])
        else:
            ids.append(str(node[0] if isinstance(node, list) else node))
    return ids, nested


def plan_group(row: dict[str, Any], *, postgres: bool = False) -> Planned:
    """Return what a django-celery-results group result becomes here; raise ``Invalid``."""
    content = celery_data.decode(
        row["result"], row["content_type"], row["content_encoding"], what="member list"
    )
    result_ids: list[str] = []
    parent_id = None
    notes: tuple[str, ...] = ()
    if content.note:
        notes = (content.note,)
    elif content.value is not None:
        value = content.value
        if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], list):
            raise Invalid(f"not a group result tuple: {value!r}")
        node = value[0]
        parent = node[1] if isinstance(node, list) and len(node) == 2 else None
        if isinstance(parent, list) and parent and isinstance(parent[0], list):
            parent_id = str(parent[0][0])
        result_ids, nested = _member_ids(value[1])
        if nested:
            notes = ("nested groups flattened into their tasks",)
    values = {
        "group_id": str(row["group_id"]),
        "result_ids": result_ids,
        "parent_id": parent_id,
        "date_created": _created(row),
        "date_done": row["date_done"],
    }
    _check(values, postgres=postgres)
    themes = (content.theme,) if content.theme else ()
    return Planned(key=values["group_id"], values=values, notes=notes, themes=themes)


# -- writing batches -------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """One kind of row written: the model, its key field, the fields written, what marks an
    imported row (``None``: any row of that key is taken as the same one)."""

    model: type[Model]
    kind: str
    key: str
    fields: tuple[str, ...]
    is_imported: Callable[[Any], bool] | None = None


def _imported_task(row: Any) -> bool:
    return isinstance(row.meta, dict) and row.meta.get("imported_from") == MARK


TASKS = Target(
    model=TaskResult, kind=TASK_KIND, key="task_id", fields=TASK_FIELDS, is_imported=_imported_task
)
GROUPS = Target(model=GroupResult, kind=GROUP_KIND, key="group_id", fields=GROUP_FIELDS)


def _chunks(keys: list[str], alias: str) -> Iterator[list[str]]:
    """Yield ``keys`` in lists short enough for one ``IN`` (SQLite takes 999 parameters)."""
    size = connections[alias].features.max_query_params or len(keys) or 1
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def _decide(target: Target, planned: list[Planned], alias: str) -> Writes:
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


def _import_batch(
    target: Target, planned: list[Planned], alias: str, *, dry_run: bool
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


# -- the import ------------------------------------------------------------------------------------
def tables(alias: str) -> tuple[SourceTable, SourceTable]:
    """Return django-celery-results' task and group result tables on database ``alias``."""
    conversions = {"datetimes": ("date_created", "date_started", "date_done")}
    return (
        SourceTable(app_label=APP, model_name="TaskResult", table=f"{APP}_taskresult", alias=alias, **conversions),
        SourceTable(app_label=APP, model_name="GroupResult", table=f"{APP}_groupresult", alias=alias, **conversions),
    )  # fmt: skip


#: called after each batch with (rows read so far, rows in all)
Progress = Callable[[int, int], None]


def _expired(planned: list[Planned]) -> int:
    """Return how many planned results the worker's cleanup would delete at once."""
    expires: dt.timedelta | None = tq_settings.RESULT_EXPIRES
    if expires is None:
        return 0
    cutoff = timezone.now() - expires
    return sum(
        1
        for item in planned
        if item.values["state"] in states.READY_STATES
        and item.values["date_done"] is not None
        and item.values["date_done"] < cutoff
    )


class ResultsImport:
    """One run of the import: where it writes, how far it got, what it found."""

    def __init__(
        self, report: Report, *, total: int, batch_size: int, progress: Progress | None
    ) -> None:
        self.report = report
        self.alias = router.db_for_write(TaskResult) or "default"
        self.postgres = connections[self.alias].vendor == "postgresql"
        self.total = total
        self.batch_size = batch_size
        self.progress = progress
        self.done = 0  #: source rows read so far
        self.expired = 0  #: imported results the worker's cleanup would delete at once

    def run(self, target: Target, table: SourceTable, plan: Callable[..., Planned]) -> None:
        """Import every row of ``table`` into ``target``, a batch at a time."""
        columns = TASK_COLUMNS if target is TASKS else GROUP_COLUMNS
        for batch in table.batches(columns, size=self.batch_size):
            planned = []
            for row in batch:
                try:
                    planned.append(plan(row, postgres=self.postgres))
                except (Invalid, ValueError) as exc:
                    failed = RowOutcome(
                        kind=target.kind,
                        key=str(row.get(target.key)),
                        action=Action.FAILED,
                        reason=str(exc),
                    )
                    self.report.add(failed)
            outcomes = _import_batch(target, planned, self.alias, dry_run=self.report.dry_run)
            for outcome, themes in outcomes:
                self.report.add(outcome, remarks=themes)
            if target is TASKS:
                self.expired += _expired(planned)
            self.done += len(batch)
            if self.progress is not None:
                self.progress(self.done, self.total)


def import_results(
    *,
    database: str = "default",
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> Report:
    """Copy django-celery-results' task and group results from database ``database``.

    ``progress`` is called after each batch. ``dry_run`` reads and compares but writes nothing.
    Raise :class:`SourceMissing` when django-celery-results' tables are not there.
    """
    task_table, group_table = tables(database)
    if not task_table.exists():
        raise task_table.missing("django-celery-results results")
    report = Report(source=SOURCE, via=task_table.via, dry_run=dry_run, keep_every_row=False)
    groups = group_table.exists()  # django-celery-results before 2.0 had no group results
    total = task_table.count() + (group_table.count() if groups else 0)
    if total == 0:
        report.warnings.append(f"{task_table.table} has no rows: nothing to import.")
    run = ResultsImport(report, total=total, batch_size=batch_size, progress=progress)
    run.run(TASKS, task_table, plan_task)
    if groups:
        run.run(GROUPS, group_table, plan_group)
    if run.expired:
        report.warnings.append(
            f"{run.expired:,} of these results finished more than TQ['RESULT_EXPIRES'] "
            f"({tq_settings.RESULT_EXPIRES}) ago: the worker's cleanup deletes them. Set "
            "TQ['RESULT_EXPIRES'] to None (or longer) to keep them."
        )
    if tq_settings.RESULT_BACKEND != "django-db":
        report.warnings.append(
            f"TQ['RESULT_BACKEND'] is {tq_settings.RESULT_BACKEND!r}: AsyncResult reads results "
            "from there, not from the TaskResult table the imported rows are in."
        )
    return report
