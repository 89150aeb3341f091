"""Running a worker as a daemon: a pidfile that refuses a second copy, and detaching.

``tqworker --pidfile`` and ``--detach`` (as Celery's ``worker --pidfile/--detach``), for hosts
without a service manager; under systemd, supervisord or Kubernetes run the worker in the
foreground instead.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class PidfileLocked(RuntimeError):
    """The pidfile names a process that is still running."""


class Pidfile:
    """A file holding this process's pid while it runs; a stale one (its process gone) is replaced."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def acquire(self) -> None:
        """Write our pid; raise :class:`PidfileLocked` if another live process holds the file."""
        pid = self.read()
        if pid is not None and pid != os.getpid() and _alive(pid):
            raise PidfileLocked(f"{self.path} says a worker runs as pid {pid}: stop it first")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # stale: its process is gone
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as file:
            file.write(f"{os.getpid()}\n")

    def read(self) -> int | None:
        """Return the pid in the file, or None when there is no file or it holds no pid."""
        try:
            return int(self.path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def release(self) -> None:
        """Remove the file if it still holds our pid."""
        if self.read() == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def detach(
    *, output: str | os.PathLike[str], workdir: str | os.PathLike[str] | None = None
) -> None:
    """Become a daemon: fork twice, leave the terminal's session, send output to ``output``.

    Returns in the daemon; the original process exits 0. Call it before opening connections or
    starting threads (a fork keeps neither working).
    """
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    if workdir is not None:
        os.chdir(workdir)
    os.umask(0o022)
    stdin = os.open(os.devnull, os.O_RDONLY)
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(stdin, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(stdin)
    os.close(out)
