"""The revoked task ids a worker process knows, re-read from the database every second."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from django_tq import control

#: re-read this far back, so revocations written by a host with a slightly late clock are seen
OVERLAP = dt.timedelta(seconds=5)


class Revocations:
    """Revoked ids (skip them) and those to terminate if running (the worker's parent stops them)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.ids: set[str] = set()
        self.terminate: dict[str, str] = {}  #: task id -> signal name
        self._since: dt.datetime | None = None
        self._next = 0.0

    def refresh(self, now: float, *, force: bool = False) -> None:
        """Read revocations created since the last read (all of them the first time), when due.

        ``force``: read now, due or not (before running a redelivered message, whose task may
        have been terminated a moment ago).
        """
        if now < self._next and not force:
            return
        self._next = now + self.interval
        started = timezone.now()
        since = None if self._since is None else self._since - OVERLAP
        for task_id, terminate, signal in control.revoked_since(since):
            self.ids.add(task_id)
            if terminate:
                self.terminate[task_id] = signal
            else:
                self.terminate.pop(task_id, None)
        self._since = started

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.ids
