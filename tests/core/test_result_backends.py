"""Result backends: the database (default), a Django cache (django-redis), none."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from django_tq import AsyncResult, serialization, states
from django_tq.message import TaskMessage
from django_tq.models import TaskResult
from django_tq.result_backends import CacheBackend, NullBackend, get_backend
from django_tq.testing import capture
from tests.conftest import require_service
from tests.testapp.tasks import add, fail


@pytest.fixture
def cache_results(settings):
    require_service("Redis", 6379)
    settings.TQ = {**settings.TQ, "RESULT_BACKEND": "django-cache://results"}
    yield
    from django.core.cache import caches

    caches["results"].clear()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_cache_backend_with_a_real_worker(cache_results, start_worker, pool):
    assert isinstance(get_backend(), CacheBackend)
    result = add.delay(3, 4)
    assert AsyncResult(result.id).state == states.QUEUED
    start_worker("-P", pool)
    assert result.get(timeout=20) == 7
    assert AsyncResult(result.id).worker.startswith("tq-")
    failed = fail.delay("cached")
    with pytest.raises(ValueError, match="cached"):
        failed.get(timeout=20)
    assert not TaskResult.objects.exists()  # nothing went to the table
    result.forget()
    assert AsyncResult(result.id).state == states.PENDING


@pytest.mark.django_db
def test_no_backend_keeps_nothing(settings):
    settings.TQ = {**settings.TQ, "RESULT_BACKEND": None}
    assert isinstance(get_backend(), NullBackend)
    with capture() as queue:
        result = add.delay(1, 2)
    queue.run_all()
    assert not TaskResult.objects.exists()
    assert AsyncResult(result.id).state == states.PENDING
    with pytest.raises(RuntimeError, match="No result backend"):
        result.get(timeout=1)


@pytest.mark.db
@pytest.mark.django_db
def test_track_enqueued_off_writes_no_row_until_the_task_runs(settings):
    settings.TQ = {**settings.TQ, "TRACK_ENQUEUED": False}
    with capture() as queue:
        result = add.delay(1, 2)
    assert AsyncResult(result.id).state == states.PENDING
    queue.run_all()
    assert TaskResult.objects.get(task_id=result.id).state == states.SUCCESS


@pytest.mark.db
@pytest.mark.django_db
def test_ignore_result_stores_nothing():
    with capture() as queue:
        result = add.apply_async((1, 2), ignore_result=True)
    queue.run_all()
    assert not TaskResult.objects.filter(task_id=result.id).exists()


def _message(task_id: str, **fields: object) -> TaskMessage:
    return TaskMessage(id=task_id, task="tests.testapp.tasks.add", args=(1, 2), **fields)  # type: ignore[arg-type]


def test_on_redis_records_are_raw_json_and_started_keeps_the_queued_date(cache_results):
    backend = get_backend()
    assert isinstance(backend, CacheBackend) and backend.redis is not None
    message = _message(uuid.uuid4().hex)
    backend.mark_queued(message)
    raw = backend.redis.read(backend.prefix + message.id)
    assert raw is not None and raw.startswith(b'{"date_created":') and b'"state":"QUEUED"' in raw
    queued = backend.get(message.id)
    assert queued is not None and queued.state == states.QUEUED and queued.args == [1, 2]
    assert backend.mark_started(message, worker="w1", delivery_count=1)
    started = backend.get(message.id)
    assert started is not None and started.state == states.STARTED and started.worker == "w1"
    assert started.date_created == queued.date_created and started.date_started is not None
    # a second delivery of a running task starts over the STARTED record (merged on the client)
    assert backend.mark_started(message, worker="w2", delivery_count=2)
    again = backend.get(message.id)
    assert again is not None and (again.worker, again.delivery_count) == ("w2", 2)
    assert again.date_created == queued.date_created
    backend.store(message, states.SUCCESS, result={"n": 1.1}, worker="w2", delivery_count=2)
    done = backend.get(message.id)
    assert done is not None and done.state == states.SUCCESS and done.result == {"n": 1.1}
    assert done.date_created == queued.date_created and done.date_done is not None
    # a finished task is refused, and its record stays as it is
    assert not backend.mark_started(message, worker="w3", delivery_count=3)
    assert backend.get(message.id) == done
    ttl = backend.redis.client.pttl(backend.cache.make_key(backend.prefix + message.id))
    assert 0 < ttl <= 7 * 24 * 3600 * 1000  # RESULT_EXPIRES, as the cache API set it


def test_records_written_by_the_cache_api_are_read_and_merged(cache_results):
    # What django_tq wrote before it wrote raw JSON on Redis: the cache API's (pickled) value.
    backend = get_backend()
    assert isinstance(backend, CacheBackend)
    created = timezone.now() - dt.timedelta(minutes=5)
    message = _message(uuid.uuid4().hex)
    old = {
        "task_id": message.id,
        "state": states.RETRY,
        "task_name": message.task,
        "result": {"exc": "boom"},
        "traceback": "Traceback …",
        "date_created": created,
    }
    backend.cache.set(backend.prefix + message.id, serialization.to_json(old), 60)
    read = backend.get(message.id)
    assert read is not None and read.state == states.RETRY and read.date_created == created
    assert backend.mark_started(message, worker="w1", delivery_count=1)
    started = backend.get(message.id)
    assert started is not None and started.state == states.STARTED
    assert started.date_created == created and started.traceback == "Traceback …"
    finished = _message(uuid.uuid4().hex)
    done = {**old, "task_id": finished.id, "state": states.SUCCESS, "result": 3}
    backend.cache.set(backend.prefix + finished.id, serialization.to_json(done), 60)
    assert not backend.mark_started(finished, worker="w1", delivery_count=1)
    kept = backend.get(finished.id)
    assert kept is not None and kept.state == states.SUCCESS and kept.result == 3


def test_a_retry_goes_back_to_queued_and_a_copy_keeps_the_record(cache_results):
    backend = get_backend()
    assert isinstance(backend, CacheBackend)
    message = _message(uuid.uuid4().hex)
    copy = _message(message.id)
    backend.mark_queued_many([(message, None), (_message(uuid.uuid4().hex), None)])
    assert backend.mark_started(message, worker="w1", delivery_count=1)
    backend.mark_queued(copy)  # a copy of a known id: the record is kept
    data = backend.get(message.id)
    assert data is not None and data.state == states.STARTED
    backend.store(message, states.RETRY, result={"exc": "x"})
    backend.mark_queued(message.with_changes(retries=1))  # a retry: QUEUED again
    data = backend.get(message.id)
    assert data is not None and data.state == states.QUEUED and data.retries == 1
    backend.set_state(message.id, states.REVOKED)
    data = backend.get(message.id)
    assert data is not None and data.state == states.REVOKED and data.date_done is not None
    backend.forget(message.id)
    assert backend.get(message.id) is None


def test_a_generic_cache_keeps_the_cache_api(settings):
    settings.TQ = {**settings.TQ, "RESULT_BACKEND": "django-cache"}  # LocMem in the tests
    backend = get_backend()
    assert isinstance(backend, CacheBackend) and backend.redis is None
    message = _message(uuid.uuid4().hex)
    backend.mark_queued(message)
    assert backend.mark_started(message, worker="w1", delivery_count=1)
    backend.store(message, states.SUCCESS, result=3)
    assert not backend.mark_started(message, worker="w2", delivery_count=2)
    data = backend.get(message.id)
    assert data is not None and data.state == states.SUCCESS and data.worker == "w1"


def test_django_s_own_redis_cache_takes_the_same_path(settings):
    require_service("Redis", 6379)
    location = settings.CACHES["results"]["LOCATION"]
    settings.CACHES = {
        **settings.CACHES,
        "builtin": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": location,
            "KEY_PREFIX": f"{settings.CACHES['results']['KEY_PREFIX']}-builtin",
        },
    }
    settings.TQ = {**settings.TQ, "RESULT_BACKEND": "django-cache://builtin"}
    backend = get_backend()
    assert isinstance(backend, CacheBackend) and backend.redis is not None
    message = _message(uuid.uuid4().hex)
    backend.mark_queued(message)
    queued = backend.get(message.id)
    assert backend.mark_started(message, worker="w1", delivery_count=1)
    backend.store(message, states.FAILURE, result={"exc": "x"}, traceback="tb")
    assert not backend.mark_started(message, worker="w2", delivery_count=2)
    done = backend.get(message.id)
    assert queued is not None and done is not None and done.state == states.FAILURE
    assert done.date_created == queued.date_created and done.worker == "w1"
    backend.forget(message.id)
    assert backend.get(message.id) is None


def test_without_result_expires_the_records_never_expire(cache_results, settings):
    settings.TQ = {**settings.TQ, "RESULT_EXPIRES": None}
    backend = get_backend()
    assert isinstance(backend, CacheBackend) and backend.redis is not None
    message = _message(uuid.uuid4().hex)
    key = backend.cache.make_key(backend.prefix + message.id)
    backend.mark_queued(message)
    assert backend.redis.client.pttl(key) == -1
    assert backend.mark_started(message, worker="w1", delivery_count=1)
    assert backend.redis.client.pttl(key) == -1
    backend.store(message, states.SUCCESS, result=1)
    assert backend.redis.client.pttl(key) == -1
    started_fresh = _message(uuid.uuid4().hex)  # no QUEUED record (TRACK_ENQUEUED off)
    assert backend.mark_started(started_fresh, worker="w1", delivery_count=1)
    data = backend.get(started_fresh.id)
    assert data is not None and data.state == states.STARTED and data.date_created is not None
    assert (
        backend.redis.client.pttl(backend.cache.make_key(backend.prefix + started_fresh.id)) == -1
    )
