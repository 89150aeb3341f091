"""A prefork child starts with the parent's objects frozen (``gc.freeze``), so its collections
leave the pages it shares with the parent unwritten (docs/performance.md, memory)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from django_tq.worker.pool import PreforkPool, Slot
from tests.conftest import wait_for

#: where the child writes what it saw (set by the test before the fork; the child inherits it)
_report: list[Path] = []


def _report_frozen(index: int, stop_event: Any, slot: Slot) -> None:
    _report[0].write_text(str(gc.get_freeze_count()))


def test_a_prefork_child_starts_with_the_parent_s_objects_frozen(tmp_path: Path) -> None:
    _report[:] = [tmp_path / "frozen"]
    gc.unfreeze()
    pool = PreforkPool(_report_frozen, 1)
    try:
        pool.start()
        wait_for(lambda: _report[0].exists() and _report[0].read_text() != "", what="the child")
        # the child's objects from before the fork are in the permanent generation
        assert int(_report[0].read_text()) > 10_000
        assert pool.join(10)
    finally:
        pool.kill()
        gc.unfreeze()  # leave this test process's collector as it was
