"""What an import did, row by row: imported, updated, unchanged, skipped or failed, and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


class Action(StrEnum):
    """What an import did with one source row."""

    IMPORTED = "imported"  #: a new row here
    UPDATED = "updated"  #: the row here was changed to follow the source
    UNCHANGED = "unchanged"  #: the row here already matches the source
    SKIPPED = "skipped"  #: deliberately not imported (the reason says why)
    FAILED = "failed"  #: could not be imported (the reason says what is wrong)


class Skipped(Exception):
    """The row is deliberately not imported (the message says why)."""


class Invalid(Exception):
    """The row cannot be imported as it is (the message says what is wrong)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RowOutcome:
    """One source row: its kind and key (a name or an id), what was done, why, and remarks."""

    kind: str  #: "periodic task", "task result", "group result"
    key: str
    action: Action
    reason: str = ""  #: why it was skipped or failed
    notes: tuple[str, ...] = ()  #: remarks on an imported or updated row ("imported disabled: …")

    def describe(self) -> str:
        """Return the outcome as one line: ``imported  nightly  (imported disabled: …)``."""
        detail = "; ".join(filter(None, (self.reason, *self.notes)))
        return f"{self.action.value:<9}  {self.key}" + (f" — {detail}" if detail else "")


#: how many rows with a reason or remark a report keeps to show (the counts include every row)
KEPT_ROWS = 1000


@dataclass(kw_only=True, slots=True)
class Report:
    """The outcomes of an import, counted by kind and action, with the rows worth showing.

    ``remarks`` counts notes by theme (``"pickled result replaced by a note"``), so a summary
    can say how many rows each affected without listing them.
    """

    source: str  #: "django-celery-beat"
    via: str = ""  #: "its models" or "plain SQL on table …"
    dry_run: bool = False
    counts: Counter[tuple[str, Action]] = field(default_factory=Counter)
    remarks: Counter[str] = field(default_factory=Counter)
    rows: list[RowOutcome] = field(default_factory=list)  #: every row, up to KEPT_ROWS
    warnings: list[str] = field(default_factory=list)
    keep_every_row: bool = True  #: else only rows with a reason or notes are kept

    def add(self, outcome: RowOutcome, *, remarks: tuple[str, ...] = ()) -> None:
        """Count ``outcome`` (and its remark themes) and keep it if it is worth showing."""
        self.counts[(outcome.kind, outcome.action)] += 1
        self.remarks.update(remarks)
        worth_showing = self.keep_every_row or outcome.reason or outcome.notes
        if worth_showing and len(self.rows) < KEPT_ROWS:
            self.rows.append(outcome)

    def count(self, action: Action, kind: str | None = None) -> int:
        """Return how many rows (of ``kind``) had ``action``."""
        return sum(n for (k, a), n in self.counts.items() if a == action and kind in (None, k))

    @property
    def total(self) -> int:
        """Return how many source rows were read."""
        return sum(self.counts.values())

    @property
    def kinds(self) -> list[str]:
        """Return the kinds of rows seen, in the order first seen."""
        return list(dict.fromkeys(kind for kind, _action in self.counts))

    @property
    def changed_anything(self) -> bool:
        """Return whether the import wrote (or, in a dry run, would write) any row."""
        return bool(self.count(Action.IMPORTED) or self.count(Action.UPDATED))

    def summary(self) -> list[str]:
        """Return one line per kind of row: ``12 periodic tasks: 10 imported, …``."""
        lines = []
        for kind in self.kinds:
            total = sum(n for (k, _a), n in self.counts.items() if k == kind)
            parts = ", ".join(f"{self.count(action, kind):,} {action.value}" for action in Action)
            lines.append(f"{total:,} {kind}{'s' if total != 1 else ''}: {parts}")
        return lines
