"""A progress bar for a terminal: ``[##########----------]  50%  5,000/10,000 rows  1,234/s``."""

from __future__ import annotations

import time
from collections.abc import Callable


class ProgressBar:
    """Redraw one terminal line through ``write`` as rows are done; :meth:`close` ends it.

    Redraws at most every ``every`` seconds (and at the end), so a fast import is not slowed
    down by its own bar.
    """

    def __init__(
        self,
        write: Callable[[str], object],
        *,
        width: int = 30,
        every: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write = write
        self.width = width
        self.every = every
        self.clock = clock
        self.started = clock()
        self.drawn_at: float | None = None

    def render(self, done: int, total: int, now: float) -> str:
        """Return the bar for ``done`` rows of ``total`` at clock time ``now``."""
        fraction = min(done / total, 1.0) if total else 1.0
        filled = round(fraction * self.width)
        elapsed = now - self.started
        rate = f"  {done / elapsed:,.0f}/s" if elapsed > 0 else ""
        bar = "#" * filled + "-" * (self.width - filled)
        return f"[{bar}] {fraction:4.0%}  {done:,}/{total:,} rows{rate}"

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if done < total and self.drawn_at is not None and now - self.drawn_at < self.every:
            return
        self.drawn_at = now
        self.write("\r" + self.render(done, total, now).ljust(self.width + 40))

    def close(self) -> None:
        """End the bar's line (if one was drawn); closing again does nothing."""
        if self.drawn_at is not None:
            self.write("\n")
            self.drawn_at = None
