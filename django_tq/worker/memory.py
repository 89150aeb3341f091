"""How much memory this process holds: what ``--max-memory-per-child`` compares to its limit."""

from __future__ import annotations

import os
import resource
import sys


def resident_kib_of(pid: int) -> int:
    """Return the resident set size in KiB of the process ``pid`` (0 where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def resident_kib() -> int:
    """Return this process's resident set size in KiB (its peak where the current one is unknown).

    Linux reports the current size in ``/proc/self/statm``; elsewhere ``getrusage`` gives the
    peak (in KiB on Linux and the BSDs, in bytes on macOS).
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak
