"""A file whose modification time says a loop is alive: the liveness probe of a container.

``tqworker --liveness-file PATH`` and ``tqbeat --liveness-file PATH`` touch it at every turn of
their loop — the worker's parent every half second, beat at least every
``BEAT_MAX_LOOP_INTERVAL`` — whatever the database and the broker answer, so a probe that checks
its age restarts a process whose loop is stuck, never one that waits out an outage (restarting
would not end that). ``python -m django_tq.liveness PATH --max-age 30`` is such a probe: exit
status 0 when the file was touched less than 30 s ago, 1 otherwise (no Django start-up, no
database).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


class LivenessFile:
    """Touch ``path`` at most every ``interval`` seconds (of ``time.monotonic()``)."""

    def __init__(self, path: str | os.PathLike[str], interval: float = 1.0) -> None:
        self.path = Path(path)
        self.interval = interval
        self._next = 0.0

    def touch(self, now: float) -> None:
        """Set the file's modification time to now, creating it (and its folder) if missing."""
        if now < self._next:
            return
        self._next = now + self.interval
        try:
            os.utime(self.path)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()

    def remove(self) -> None:
        """Remove the file (the loop ended): a probe fails from now on."""
        self.path.unlink(missing_ok=True)


def age(path: str | os.PathLike[str], now: float | None = None) -> float | None:
    """Seconds since ``path`` was last touched, or None when it does not exist."""
    try:
        modified = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    return (time.time() if now is None else now) - modified


def main(argv: list[str] | None = None) -> int:
    """``python -m django_tq.liveness PATH [--max-age S]``: 0 when alive, 1 when not."""
    parser = argparse.ArgumentParser(
        prog="python -m django_tq.liveness",
        description="Exit 0 when the liveness file was touched recently, 1 when not.",
    )
    parser.add_argument("path", help="the file given to tqworker/tqbeat --liveness-file")
    parser.add_argument(
        "--max-age", type=float, default=30.0, help="seconds the file may be old (default 30)"
    )
    options = parser.parse_args(argv)
    seconds = age(options.path)
    if seconds is None:
        print(f"{options.path}: missing (the loop has not started, or it stopped)", file=sys.stderr)
        return 1
    if seconds > options.max_age:
        print(
            f"{options.path}: last touched {seconds:.0f} s ago (> {options.max_age:g} s)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
