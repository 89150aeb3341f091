"""SQLite shared by several processes: immediate write transactions, what django_tq's own
processes and connections set by themselves, and system check ``tq.W002``."""

from __future__ import annotations

import ast
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connection, connections, transaction

from django_tq import sqlite
from django_tq.checks import check_settings
from tests.conftest import ROOT, worker_env
from tests.testapp.models import Order

STOCK = {"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/site/db.sqlite3"}
WAL = "PRAGMA journal_mode=WAL;"


def _needs_sqlite() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")


@pytest.fixture
def other_writer() -> Iterator[sqlite3.Connection]:
    """A second process's connection to the test database (as ``sqlite3`` gives it)."""
    _needs_sqlite()
    db = sqlite3.connect(
        connection.settings_dict["NAME"], timeout=5, isolation_level=None, check_same_thread=False
    )
    yield db
    if db.in_transaction:
        db.execute("ROLLBACK")
    db.close()


def _hold_write_lock(
    db: sqlite3.Connection, seconds: float, table: str = "testapp_order"
) -> threading.Thread:
    """Take the write lock on ``db`` now (a row written, not committed); commit after ``seconds``."""
    db.execute("BEGIN IMMEDIATE")
    if table == "testapp_order":
        db.execute("INSERT INTO testapp_order (number) VALUES ('other')")
    else:
        db.execute(f"INSERT INTO {table} VALUES (1)")
    committer = threading.Timer(seconds, lambda: db.execute("COMMIT"))
    committer.start()
    return committer


# -- immediate write transactions ---------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_deferred_transaction_that_reads_first_fails_at_once_but_write_atomic_waits(
    other_writer: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = connections["default"]
    db.ensure_connection()
    monkeypatch.setattr(db, "transaction_mode", None)  # startproject's: BEGIN DEFERRED

    # The failure: a deferred transaction that read first cannot upgrade to writing while
    # another connection writes; SQLite refuses at once, whatever the busy timeout (20 s here).
    committer = _hold_write_lock(other_writer, 1.0)
    started = time.monotonic()
    with pytest.raises(OperationalError, match="locked"), transaction.atomic():
        Order.objects.count()
        Order.objects.create(number="deferred")
    assert time.monotonic() - started < 0.9
    committer.join()

    # write_atomic begins IMMEDIATE: it waits for the lock, then reads and writes.
    committer = _hold_write_lock(other_writer, 0.5)
    with sqlite.write_atomic("default"):
        seen = Order.objects.count()
        Order.objects.create(number="immediate")
    committer.join()
    assert seen == 2  # it began after the other writer committed: it saw both rows
    assert sorted(Order.objects.values_list("number", flat=True)) == [
        "immediate",
        "other",
        "other",
    ]
    assert db.transaction_mode is None  # the connection's own mode is left as it was


@pytest.mark.django_db(transaction=True)
def test_write_atomic_restores_the_mode_and_nests_as_a_savepoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _needs_sqlite()
    db = connections["default"]
    db.ensure_connection()
    monkeypatch.setattr(db, "transaction_mode", "DEFERRED")
    with pytest.raises(ValueError), sqlite.write_atomic("default"):
        Order.objects.create(number="rolled back")
        raise ValueError
    assert db.transaction_mode == "DEFERRED"
    assert not Order.objects.exists()
    with transaction.atomic():
        with pytest.raises(ValueError), sqlite.write_atomic("default"):
            Order.objects.create(number="savepoint")
            raise ValueError
        Order.objects.create(number="kept")
    assert list(Order.objects.values_list("number", flat=True)) == ["kept"]


# -- what django_tq sets by itself -------------------------------------------------------------
def test_own_connections_get_a_busy_timeout_and_immediate_transactions() -> None:
    assert sqlite.own_settings(STOCK)["OPTIONS"] == {
        "timeout": sqlite.BUSY_TIMEOUT,
        "transaction_mode": "IMMEDIATE",
    }
    chosen = {**STOCK, "OPTIONS": {"timeout": 3, "transaction_mode": "EXCLUSIVE"}}
    assert sqlite.own_settings(chosen)["OPTIONS"] == chosen["OPTIONS"]
    assert "OPTIONS" not in STOCK  # a copy: the alias's own settings are left alone


def test_prepare_process_sets_a_busy_timeout_and_switches_the_file_to_wal(
    tmp_path: Path,
) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    path = tmp_path / "stock.sqlite3"
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("CREATE TABLE t (x)")
    # Another process is writing when the worker starts: SQLite refuses the switch while it does,
    # so the switch is tried again until the writer commits.
    committer = _hold_write_lock(db, 3.0, table="t")
    script = (
        "import django, json; django.setup()\n"
        "from django.db import connection\n"
        "from django_tq import sqlite\n"
        "sqlite.prepare_process()\n"
        "connection.ensure_connection()\n"
        "print(json.dumps(connection.settings_dict['OPTIONS']))\n"
    )
    env = {**worker_env(), "TQ_TEST_SQLITE_STOCK": "1", "TQ_TEST_DB_NAME": str(path)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    committer.join()
    db.close()
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == {"timeout": sqlite.BUSY_TIMEOUT}
    assert b"Switched the SQLite database 'default' to WAL" in done.stderr
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # kept by the file
    db.close()


def test_a_journal_mode_chosen_in_init_command_is_left_alone() -> None:
    chosen = {**STOCK, "OPTIONS": {"init_command": "PRAGMA journal_mode=DELETE"}}
    assert sqlite.sets_journal_mode(chosen)
    assert not sqlite.sets_journal_mode(STOCK)
    assert sqlite.recommended_options(chosen)["init_command"] == "PRAGMA journal_mode=DELETE"


# -- system check tq.W002 ---------------------------------------------------------------------
def _databases(**default: Any) -> dict[str, Any]:
    return {"default": {**STOCK, **default}}


def _sqlite_warnings() -> list[Any]:
    return [message for message in check_settings() if message.id == "tq.W002"]


def _pasted(hint: str) -> dict[str, Any]:
    """Return the ``OPTIONS`` dict a hint tells the user to paste."""
    prefix = "Set DATABASES['default']['OPTIONS'] = "
    assert hint.startswith(prefix), hint
    options = ast.literal_eval(hint.removeprefix(prefix))
    assert isinstance(options, dict)
    return options


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_check_warns_about_a_stock_sqlite_database_and_gives_the_options(settings: Any) -> None:
    settings.TQ = {"BROKER_URL": "django://", "RESULT_BACKEND": "django-db"}
    settings.DATABASES = _databases()
    [warning] = _sqlite_warnings()
    assert "the django:// queue and results" in warning.msg
    assert "'timeout' and 'transaction_mode'" in warning.msg
    pasted = _pasted(warning.hint)
    assert pasted == {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": WAL}

    settings.DATABASES = _databases(OPTIONS=pasted)  # what the hint says silences it
    assert _sqlite_warnings() == []


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_check_keeps_the_users_options_in_the_hint(settings: Any) -> None:
    settings.TQ = {"BROKER_URL": "redis://127.0.0.1:6379/0", "RESULT_BACKEND": "django-db"}
    settings.DATABASES = _databases(
        OPTIONS={"timeout": 30, "init_command": "PRAGMA foreign_keys=ON"}
    )
    [warning] = _sqlite_warnings()
    assert "holds results," in warning.msg and "lack 'transaction_mode'" in warning.msg
    assert _pasted(warning.hint) == {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": f"PRAGMA foreign_keys=ON; {WAL}",
    }


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
@pytest.mark.parametrize(
    ("tq", "default"),
    [
        # neither the queue nor the results are in the database
        ({"BROKER_URL": "redis://127.0.0.1:6379/0", "RESULT_BACKEND": "django-cache"}, {}),
        # one process only: an in-memory database
        ({"BROKER_URL": "django://"}, {"NAME": ":memory:"}),
        ({"BROKER_URL": "django://"}, {"NAME": "file:db?mode=memory&cache=shared"}),
        # not SQLite
        ({"BROKER_URL": "django://"}, {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}),
        # EXCLUSIVE takes the write lock at BEGIN too
        ({"BROKER_URL": "django://"}, {"OPTIONS": {"timeout": 5, "transaction_mode": "exclusive"}}),
    ],
)
def test_check_is_quiet_where_nothing_is_missing(
    settings: Any, tq: dict[str, Any], default: dict[str, Any]
) -> None:
    settings.TQ = tq
    settings.DATABASES = _databases(**default)
    assert _sqlite_warnings() == []
