"""``tqworker --autoreload``: notice that the project's code changed (for development).

The worker's parent asks :meth:`CodeWatcher.tick` once a tick; when a file changed the worker
shuts down warm (running tasks finish, leases go back) and ``tqworker`` starts again in the same
process with the new code, the way ``runserver`` reloads. The files watched are those of every
imported module, as Django's own reloader watches them.
"""

from __future__ import annotations

from pathlib import Path

from django.utils import autoreload


class CodeWatcher:
    """Compares the modification times of the imported modules' files, every ``interval`` s."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._next = 0.0
        self._mtimes = self._snapshot()

    def _snapshot(self) -> dict[Path, float]:
        mtimes = {}
        for path in autoreload.iter_all_python_module_files():
            try:
                mtimes[path] = path.stat().st_mtime
            except OSError:  # removed: its absence is noticed as a change
                continue
        return mtimes

    def tick(self, now: float) -> Path | None:
        """Return a file that changed since the last look (when due), else None."""
        if now < self._next:
            return None
        self._next = now + self.interval
        current = self._snapshot()
        changed = next(
            (path for path, mtime in current.items() if self._mtimes.get(path, mtime) != mtime),
            None,
        )
        if changed is None:
            changed = next((path for path in self._mtimes if path not in current), None)
        self._mtimes = current
        return changed

    @staticmethod
    def restart_arguments() -> list[str]:
        """Return the command line that starts this process again (``python -m`` aware)."""
        return [str(argument) for argument in autoreload.get_child_arguments()]
