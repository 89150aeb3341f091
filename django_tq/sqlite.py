"""SQLite shared by several processes: what django_tq sets by itself, and what it recommends.

SQLite lets one connection write at a time. Three things keep a web process, a worker and beat
from failing with "database is locked" on one file:

* a busy timeout: a writer waits for the lock instead of failing (Python's default is 5 s);
* immediate transactions: a transaction that writes takes the write lock at ``BEGIN``. A deferred
  one (Django's default) that reads first must upgrade its read lock when it writes, and while
  another connection writes SQLite refuses that upgrade at once: the busy timeout does not help;
* WAL: readers and the writer do not wait for each other. It is a property of the file, kept
  once set.

django_tq sets what is safe to set without asking:

* :func:`own_settings`: the connections it opens for itself (the ``django://`` transport's
  claiming connection) get the busy timeout and immediate transactions;
* :func:`prepare_process`: in its own processes (``tqworker`` and its children, ``tqbeat``)
  every SQLite connection gets the busy timeout, and the file WAL, unless ``OPTIONS`` says
  otherwise. Their transaction mode is left alone: task code runs on those connections;
* :func:`write_atomic`: its own write transactions begin ``IMMEDIATE``, in any process.

The connections of the user's own processes (the web process, a shell) are left as configured:
system check ``tq.W002`` asks for :func:`recommended_options` there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, OperationalError, connections, transaction

logger = logging.getLogger("django_tq.sqlite")

#: seconds a connection of django_tq waits for the write lock (unless ``OPTIONS`` sets ``timeout``)
BUSY_TIMEOUT = 20
#: the transaction modes that take the write lock at ``BEGIN``
WRITE_LOCKING = frozenset({"IMMEDIATE", "EXCLUSIVE"})
WAL_PRAGMA = "PRAGMA journal_mode=WAL;"
#: how long a process keeps trying to switch a busy file to WAL when it starts
WAL_SWITCH_SECONDS = 5.0


def is_shared_file(settings_dict: dict[str, Any]) -> bool:
    """Return whether a ``DATABASES`` entry is SQLite in a file (one several processes can open)."""
    engine = str(settings_dict.get("ENGINE") or "").rsplit(".", 1)[-1]
    name = str(settings_dict.get("NAME") or "")
    in_memory = name in ("", ":memory:") or "mode=memory" in name
    return engine.startswith("sqlite") and not in_memory


def _options(settings_dict: dict[str, Any]) -> dict[str, Any]:
    return dict(settings_dict.get("OPTIONS") or {})


def sets_journal_mode(settings_dict: dict[str, Any]) -> bool:
    """Return whether ``OPTIONS["init_command"]`` chooses a journal mode (then it is left alone)."""
    return "journal_mode" in str(_options(settings_dict).get("init_command", "")).lower()


def _for_writers(settings_dict: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the ``OPTIONS`` with a busy timeout and a write-locking transaction mode."""
    options = _options(settings_dict)
    options.setdefault("timeout", BUSY_TIMEOUT)
    if str(options.get("transaction_mode") or "").upper() not in WRITE_LOCKING:
        options["transaction_mode"] = "IMMEDIATE"
    return options


def missing_options(settings_dict: dict[str, Any]) -> list[str]:
    """Return what a SQLite alias's ``OPTIONS`` lack for several writing processes.

    ``timeout`` (a busy timeout chosen for the load, not Python's 5 s default) and an
    ``IMMEDIATE`` (or ``EXCLUSIVE``) ``transaction_mode``. WAL is not required here:
    django_tq's processes turn it on by themselves.
    """
    options = _options(settings_dict)
    missing = []
    if "timeout" not in options:
        missing.append("timeout")
    if str(options.get("transaction_mode") or "").upper() not in WRITE_LOCKING:
        missing.append("transaction_mode")
    return missing


def recommended_options(settings_dict: dict[str, Any]) -> dict[str, Any]:
    """Return the ``OPTIONS`` to paste for this alias: its own, plus what several writers need.

    A busy timeout, ``IMMEDIATE`` transactions, and WAL unless ``init_command`` chooses a
    journal mode already.
    """
    options = _for_writers(settings_dict)
    if not sets_journal_mode(settings_dict):
        command = str(options.get("init_command") or "").strip()
        if command and not command.endswith(";"):
            command += ";"
        options["init_command"] = f"{command} {WAL_PRAGMA}".strip()
    return options


def own_settings(settings_dict: dict[str, Any]) -> dict[str, Any]:
    """Return ``settings_dict`` for a connection only django_tq uses: busy timeout, immediate.

    A ``timeout`` or a write-locking ``transaction_mode`` in ``OPTIONS`` is kept.
    """
    return {**settings_dict, "OPTIONS": _for_writers(settings_dict)}


def prepare_process() -> None:
    """Prepare this django_tq process's SQLite connections: busy timeout, WAL on the file.

    Call it where the process (or thread) starts, before its first query. Idempotent; a
    connection already open in this thread is closed, so that the next query opens one with the
    timeout (unless it is inside a transaction).
    """
    for alias in connections:
        connection = connections[alias]
        if not is_shared_file(connection.settings_dict):
            continue
        options = connection.settings_dict.setdefault("OPTIONS", {})
        if "timeout" not in options:
            options["timeout"] = BUSY_TIMEOUT
            if connection.connection is not None and not connection.in_atomic_block:
                connection.close()
        if not sets_journal_mode(connection.settings_dict):
            turn_on_wal(alias)


def turn_on_wal(alias: str, *, within: float = WAL_SWITCH_SECONDS) -> bool:
    """Switch ``alias``'s file to WAL if it is not in it yet; return whether it is in WAL now.

    Through a connection of its own. The switch needs a moment when no other connection writes
    (SQLite refuses it at once, without waiting, while one does), so it is tried again every
    50 ms for ``within`` seconds. A database that cannot switch (always busy meanwhile, a
    read-only file) stays as it is, with a warning: everything still works, with more waiting for
    locks, and the next django_tq process to start tries again.
    """
    connection = connections.create_connection(alias)
    own = own_settings(connection.settings_dict)
    connection.settings_dict = {**own, "OPTIONS": {**own["OPTIONS"], "timeout": 0.1}}
    deadline = time.monotonic() + within
    try:
        while True:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("PRAGMA journal_mode")
                    if str(cursor.fetchone()[0]).lower() == "wal":
                        return True
                    cursor.execute("PRAGMA journal_mode=WAL")
                    mode = str(cursor.fetchone()[0]).lower()
                break
            except OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
    except DatabaseError as exc:
        logger.warning(
            "Could not switch the SQLite database %r to WAL (%s); it keeps its journal mode",
            alias,
            exc,
        )
        return False
    finally:
        connection.close()
    if mode != "wal":
        logger.warning("The SQLite database %r stays in journal mode %r (no WAL)", alias, mode)
        return False
    logger.info(
        "Switched the SQLite database %r to WAL, so that readers and the writer do not wait for "
        "each other (set a journal_mode in OPTIONS['init_command'] to choose another)",
        alias,
    )
    return True


@contextmanager
def write_atomic(using: str) -> Iterator[None]:
    """Run the block in ``transaction.atomic(using=using)``; on SQLite, ``BEGIN IMMEDIATE`` it.

    For a block that writes, maybe after reading: it takes SQLite's write lock at once (waiting
    up to the busy timeout), so that it never fails on a lock upgrade. Inside a transaction
    already open on the alias it is a savepoint as usual (the outer transaction decides).
    """
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic(using=using):
            yield
        return
    connection.ensure_connection()
    mode = connection.transaction_mode  # type: ignore[attr-defined]
    if mode not in WRITE_LOCKING:
        connection.transaction_mode = "IMMEDIATE"  # type: ignore[attr-defined]
    try:
        with transaction.atomic(using=using):
            yield
    finally:
        connection.transaction_mode = mode  # type: ignore[attr-defined]
