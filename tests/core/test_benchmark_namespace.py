"""Benchmark runs on one machine own their stores: a Redis database claimed, names with the run id."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from benchmarks import namespace
from tests.conftest import require_service
from tests.settings import REDIS_DB

#: this xdist worker's third database (the transport tests flush it too, one test at a time)
DB = REDIS_DB + 2
DEAD_RUN = "999999999:0"  # no such pid


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    require_service("Redis", 6379)
    monkeypatch.setattr(namespace, "REDIS_CANDIDATES", (DB,))
    monkeypatch.setattr(namespace, "REDIS_DB", -1)
    client = redis.Redis(host="127.0.0.1", db=DB)
    client.flushdb()
    yield client
    client.flushdb()


def test_a_run_claims_an_empty_database_empties_only_it_and_releases_it(client) -> None:
    assert namespace.claim_redis_db() == DB == namespace.REDIS_DB
    assert client.get(namespace.OWNER_KEY).decode() == namespace.owner_id()
    client.set("leftover", "1")
    namespace.empty_redis_db()
    assert client.keys("*") == [namespace.OWNER_KEY.encode()]  # still claimed
    namespace.release_redis_db()
    assert client.dbsize() == 0


def test_a_database_of_a_live_run_or_of_someone_else_is_never_taken(client) -> None:
    client.set(namespace.OWNER_KEY, namespace.owner_id(os.getppid()))  # a live process
    with pytest.raises(RuntimeError, match="no free Redis database"):
        namespace.claim_redis_db()
    client.flushdb()
    client.set("someone-elses", "data")  # not a benchmark's: no owner key
    with pytest.raises(RuntimeError, match="no free Redis database"):
        namespace.claim_redis_db()
    assert client.keys("*") == [b"someone-elses"]


def test_the_database_of_a_run_that_is_gone_is_emptied_and_taken(client) -> None:
    client.set(namespace.OWNER_KEY, DEAD_RUN)
    client.set("its-backlog", "x")
    assert namespace.claim_redis_db() == DB
    assert client.keys("*") == [namespace.OWNER_KEY.encode()]
    namespace.release_redis_db()
    client.set(namespace.OWNER_KEY, DEAD_RUN)
    namespace.release_redis_db()  # not ours any more: left alone
    assert client.get(namespace.OWNER_KEY).decode() == DEAD_RUN


def test_names_carry_the_run_id_and_only_gone_runs_databases_are_stale() -> None:
    run = namespace.RUN_ID
    assert namespace.queue("tq_bench") == f"tq_bench_{run}"
    assert (
        f"tq_bench_{run}",
        f"tq_bench_{run}_procrastinate",
        f"tq_bench_{run}_raw",
    ) == namespace.PG_DATABASES
    live = str(os.getppid())
    names = [
        "tq_bench_999999999",
        "tq_bench_999999999_raw",
        f"tq_bench_{live}",
        f"tq_bench_{run}",
        "tq_bench",
        "postgres",
    ]
    assert namespace.stale_databases(names) == ["tq_bench_999999999", "tq_bench_999999999_raw"]
