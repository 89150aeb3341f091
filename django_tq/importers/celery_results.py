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
from collections.abc import Callable
from typing import Any

from django.db import connections, router
from django.utils import timezone

from django_tq import states
from django_tq.conf import tq_settings
from django_tq.importers import celery_data
from django_tq.importers.batches import PlannedRow, Target, import_batch
from django_tq.importers.report import Action, Invalid, Report, RowOutcome
from django_tq.importers.tables import SourceTable
from django_tq.models import GroupResult, TaskResult
from django_tq.serialization import has_nul

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


def plan_task(row: dict[str, Any], *, postgres: bool = False) -> PlannedRow:
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
    return PlannedRow(key=values["task_id"], values=values, notes=notes, themes=themes)


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


def plan_group(row: dict[str, Any], *, postgres: bool = False) -> PlannedRow:
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
    return PlannedRow(key=values["group_id"], values=values, notes=notes, themes=themes)


# -- writing batches -------------------------------------------------------------------------------
def _imported_task(row: Any) -> bool:
    return isinstance(row.meta, dict) and row.meta.get("imported_from") == MARK


TASKS = Target(
    model=TaskResult, kind=TASK_KIND, key="task_id", fields=TASK_FIELDS, is_imported=_imported_task
)
GROUPS = Target(model=GroupResult, kind=GROUP_KIND, key="group_id", fields=GROUP_FIELDS)


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


def _expired(planned: list[PlannedRow]) -> int:
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

    def run(self, target: Target, table: SourceTable, plan: Callable[..., PlannedRow]) -> None:
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
            outcomes = import_batch(target, planned, self.alias, dry_run=self.report.dry_run)
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
