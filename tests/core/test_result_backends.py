"""Result backends: the database (default), a Django cache (django-redis), none."""

from __future__ import annotations

import pytest

from django_tq import AsyncResult, states
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
def test_cache_backend_with_a_real_worker(cache_results, start_worker):
    assert isinstance(get_backend(), CacheBackend)
    result = add.delay(3, 4)
    assert AsyncResult(result.id).state == states.QUEUED
    start_worker("-P", "solo")
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
