"""Rate limits: token buckets driven with fixed times, then real workers on every transport."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_tq.models import RateLimitBucket
from django_tq.rate_limits import Bucket, Rate, RateLimiter, parse_rate, take_shared
from django_tq.tasks import Task
from tests.conftest import wait_for
from tests.testapp.models import Execution
from tests.testapp.tasks import limited, limited_per_worker, record

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "value, per_second",
    [("10/s", 10.0), ("120/m", 2.0), ("1800/h", 0.5), (" 4 / s ", 4.0), ("3", 3.0), (2, 2.0)],
)
def test_rates_are_parsed(value, per_second):
    assert parse_rate(value) == Rate(per_second=per_second)


@pytest.mark.parametrize("value", [None, 0, "0/m"])
def test_no_rate(value):
    assert parse_rate(value) is None


@pytest.mark.parametrize("value", ["10/d", "fast", "-1/s", True, "inf"])
def test_bad_rates_are_refused(value):
    with pytest.raises(ValueError, match="rate_limit must look like"):
        parse_rate(value)


def test_bad_task_options_fail_at_declaration():
    with pytest.raises(ValueError, match="rate_limit"):
        Task(lambda: None, name="t.bad_rate", rate_limit="10 per second")
    with pytest.raises(ValueError, match="rate_limit_scope"):
        Task(lambda: None, name="t.bad_scope", rate_limit="1/s", rate_limit_scope="cluster")


@pytest.mark.db
def test_a_bucket_spaces_starts_by_the_interval():
    rate = Rate(per_second=5)
    bucket = Bucket.full(at(0))
    waits = []
    for _ in range(4):  # four at once: now, then reserved 0.2 s apart
        bucket, wait = bucket.take(rate, at(0))
        waits.append(round(wait, 6))
    assert waits == [0.0, 0.2, 0.4, 0.6]
    bucket, wait = bucket.take(rate, at(0.5))  # the reservations still count
    assert wait == pytest.approx(0.3)
    bucket, wait = bucket.take(rate, at(10))  # refilled, but never beyond one token
    assert wait == 0.0
    assert bucket.take(rate, at(10))[1] == pytest.approx(0.2)


@pytest.mark.db
def test_a_bucket_tolerates_a_clock_behind_its_last_update():
    rate = Rate(per_second=1)
    bucket, _ = Bucket.full(at(5)).take(rate, at(5))
    bucket, wait = bucket.take(rate, at(4))  # another host's clock is a second behind
    assert wait == pytest.approx(1.0) and bucket.updated_at == at(5)


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_the_shared_bucket_is_one_row_all_consumers_take_from():
    rate = Rate(per_second=10)
    first, second = RateLimiter(), RateLimiter()
    assert take_shared("t.shared", rate, at(0)) == 0.0
    assert take_shared("t.shared", rate, at(0)) == pytest.approx(0.1)
    assert first.reserve(limited, at(0)) == 0.0  # a task's bucket is named after it
    assert second.reserve(limited, at(0)) == pytest.approx(0.2)  # limited is 5/s
    with CaptureQueriesContext(connection) as queries:
        assert first.reserve(record, at(0)) == 0.0  # no limit: no bucket, no query
    assert not queries.captured_queries
    assert set(RateLimitBucket.objects.values_list("name", flat=True)) == {"t.shared", limited.name}


@pytest.mark.django_db(transaction=True)
def test_worker_scope_buckets_live_in_each_consumer():
    first, second = RateLimiter(), RateLimiter()
    assert first.reserve(limited_per_worker, at(0)) == 0.0
    assert first.reserve(limited_per_worker, at(0)) == pytest.approx(0.2)
    assert second.reserve(limited_per_worker, at(0)) == 0.0
    assert not RateLimitBucket.objects.exists()


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_concurrent_takes_never_share_a_token():
    """Threads have their own connections: on PostgreSQL/MySQL, real concurrent transactions."""
    threads, takes = 4, 5
    rate = Rate(per_second=10)
    waits: list[float] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def take() -> None:
        try:
            barrier.wait(10)
            for _ in range(takes):
                waits.append(round(take_shared("t.race", rate, at(0)), 6))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=take) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(30)
    assert not errors
    assert sorted(waits) == [round(n * 0.1, 6) for n in range(threads * takes)]


def _times(prefix: str) -> list[dt.datetime]:
    rows = Execution.objects.filter(label__startswith=prefix).order_by("created_at")
    return list(rows.values_list("created_at", flat=True))


def _most_in_one_second(times: list[dt.datetime]) -> int:
    """Return the most starts within any one second, allowing a start to run 200 ms late.

    Tokens are due exactly 0.2 s apart; a worker busy with another task, or a loaded machine,
    starts one later than its token, which brings it closer to the next one.
    """
    window = dt.timedelta(seconds=0.8)
    return max(sum(1 for other in times if start <= other < start + window) for start in times)


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_a_global_limit_holds_across_workers_and_others_pass(broker_url, start_worker):
    for index in range(15):
        limited.delay(str(index))
    free = record.delay("free")
    start_worker("-P", "prefork", "-c", "1")
    start_worker("-P", "prefork", "-c", "1")
    wait_for(lambda: len(_times("limited:")) == 15, timeout=30, what="15 rate-limited runs")
    times = _times("limited:")
    assert (times[-1] - times[0]).total_seconds() >= 2.5  # 14 intervals of 0.2 s
    assert _most_in_one_second(times) <= 5  # whichever worker ran them
    assert free.get(timeout=10) == "free"
    (ran_free,) = _times("free")
    assert ran_free < times[-1] - dt.timedelta(seconds=1)  # not queued behind the limited ones


@pytest.mark.django_db(transaction=True)
def test_a_worker_scope_limit_holds_in_each_process(start_worker):
    start_worker("-P", "prefork", "-c", "2")
    for index in range(12):
        limited_per_worker.delay(str(index))
    wait_for(lambda: len(_times("per-worker:")) == 12, timeout=30, what="12 rate-limited runs")
    rows = Execution.objects.filter(label__startswith="per-worker:").order_by("created_at")
    by_pid: dict[int, list[dt.datetime]] = {}
    for row in rows:
        by_pid.setdefault(row.pid, []).append(row.created_at)
    assert len(by_pid) == 2
    for times in by_pid.values():
        assert _most_in_one_second(times) <= 5
    assert not RateLimitBucket.objects.exists()  # no shared bucket: one in each process
