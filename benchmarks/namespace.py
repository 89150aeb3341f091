"""What one benchmark run owns on the shared services, so runs on one machine can overlap.

Every name carries the run's id (``BENCH_RUN_ID``: the orchestrator's pid, inherited by the
drivers and workers it starts):

* PostgreSQL: databases ``tq_bench_<run>``, ``tq_bench_<run>_procrastinate``,
  ``tq_bench_<run>_raw``, dropped at the end of the run; a later run drops those of runs whose
  process is gone (:func:`stale_databases`);
* RabbitMQ: queues ``<name>_<run>`` (``tq_bench_<run>``, ``celery_bench_<run>`` …) and
  django_tq's control exchanges ``tq-bench-<run>.*``, deleted at the end;
* Redis: one database of its own (``BENCH_REDIS_DB``), among :data:`REDIS_CANDIDATES`, claimed
  with an owner key (:func:`claim_redis_db`): a run empties only the database it owns (the
  systems run one after another, so they share it), and never one holding keys it did not write.

A run's owner is ``"<pid>:<start time>"`` (``/proc/<pid>/stat``): a pid reused by another process
does not keep a dead run's database claimed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
#: the Redis server's port (``BENCH_REDIS_PORT``: a private redis-server, out of reach of other
#: sessions' load and commands)
REDIS_PORT = int(os.environ.get("BENCH_REDIS_PORT", "6379"))
#: the orchestrator's pid unless inherited (every process of one run shares it)
RUN_ID = os.environ.get("BENCH_RUN_ID") or str(os.getpid())
PG_PREFIX = "tq_bench_"
PG_DB = f"{PG_PREFIX}{RUN_ID}"
PG_PROCRASTINATE_DB = f"{PG_DB}_procrastinate"
PG_RAW_DB = f"{PG_DB}_raw"
PG_DATABASES = (PG_DB, PG_PROCRASTINATE_DB, PG_RAW_DB)
#: the Redis databases a run may claim: the test suite uses 5 + 3 per xdist worker (5-10 with
#: the default two), so the benchmark takes the top of the default 16
REDIS_CANDIDATES = (15, 14, 13, 12, 11)
#: the key that says which run owns a Redis database
OWNER_KEY = "tq-bench:owner"
#: the database this process's run owns (set by the orchestrator for its children)
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", str(REDIS_CANDIDATES[0])))
CONTROL_EXCHANGE = f"tq-bench-{RUN_ID}"


def queue(name: str) -> str:
    """Return this run's name for the queue ``name``."""
    return f"{name}_{RUN_ID}"


def env() -> dict[str, str]:
    """Return the environment that gives a child process this run's names."""
    return {"BENCH_RUN_ID": RUN_ID, "BENCH_REDIS_DB": str(REDIS_DB)}


# -- who is alive ----------------------------------------------------------------------------------
def start_time(pid: int) -> str | None:
    """Return the start time of process ``pid`` (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[19]


def owner_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{start_time(pid)}"


def is_alive(owner: str) -> bool:
    """Return whether the run ``owner`` (``pid:start``) is still running."""
    pid, _, started = owner.partition(":")
    return pid.isdigit() and start_time(int(pid)) == started


# -- Redis ------------------------------------------------------------------------------------------
def _redis(db: int) -> Any:
    import redis

    return redis.Redis(host=HOST, port=REDIS_PORT, db=db, socket_connect_timeout=2)


def claim_redis_db() -> int:
    """Claim a Redis database for this run; set :data:`REDIS_DB` to it; return it.

    A database is free when it is empty (nobody's), or when its owner key names a run that is
    gone (its leftovers are emptied). The claim is a ``SET NX`` (or, taking a dead run's database,
    a ``WATCH``-guarded transaction), so two runs never claim the same one.
    """
    import redis

    global REDIS_DB
    me = owner_id()
    for db in REDIS_CANDIDATES:
        client = _redis(db)
        if client.set(OWNER_KEY, me, nx=True):
            if client.dbsize() == 1:  # nothing but our key: it was empty
                REDIS_DB = db
                return db
            _release_if_owner(client, me, flush=False)  # someone else's data: not ours to take
            continue
        with client.pipeline() as pipe:
            try:
                pipe.watch(OWNER_KEY)
                owner = pipe.get(OWNER_KEY)
                if owner is None or is_alive(owner.decode()):
                    continue
                pipe.multi()
                pipe.flushdb()
                pipe.set(OWNER_KEY, me)
                pipe.execute()
            except redis.WatchError:  # another run took it first
                continue
        REDIS_DB = db
        return db
    raise RuntimeError(
        f"no free Redis database among {REDIS_CANDIDATES}: each holds keys of a live benchmark "
        "run or of something else"
    )


def empty_redis_db() -> None:
    """Empty this run's Redis database, keeping the claim (one transaction: no gap to steal)."""
    client = _redis(REDIS_DB)
    with client.pipeline(transaction=True) as pipe:
        pipe.flushdb()
        pipe.set(OWNER_KEY, owner_id())
        pipe.execute()


def release_redis_db() -> None:
    """Empty this run's Redis database and give it up (if this run still owns it)."""
    _release_if_owner(_redis(REDIS_DB), owner_id(), flush=True)


def _release_if_owner(client: Any, me: str, *, flush: bool) -> None:
    import redis

    with client.pipeline() as pipe, contextlib.suppress(redis.WatchError):
        pipe.watch(OWNER_KEY)
        owner = pipe.get(OWNER_KEY)
        if owner is None or owner.decode() != me:
            return
        pipe.multi()
        if flush:
            pipe.flushdb()
        else:
            pipe.delete(OWNER_KEY)
        pipe.execute()


# -- PostgreSQL -------------------------------------------------------------------------------------
def stale_databases(names: list[str]) -> list[str]:
    """Return the benchmark databases among ``names`` whose run is gone (to be dropped)."""
    stale = []
    for name in names:
        if not name.startswith(PG_PREFIX):
            continue
        run = name.removeprefix(PG_PREFIX).split("_", 1)[0]
        if run.isdigit() and run != RUN_ID and start_time(int(run)) is None:
            stale.append(name)
    return stale
