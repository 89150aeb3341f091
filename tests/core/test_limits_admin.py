"""The unique locks and rate-limit buckets screens: staff see them escaped; deleting frees a key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from django_tq.models import RateLimitBucket, UniqueLock
from tests.testapp.tasks import sync_user

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]

XSS = "<script>alert(1)</script>"


def admin_url(model: str, view: str = "changelist", *args: Any) -> str:
    return reverse(f"admin:django_tq_{model}_{view}", args=args)


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("admin", "admin@example.com", None)


def test_locks_and_buckets_render_escaped(admin_client: Any) -> None:
    now = timezone.now()
    held = UniqueLock.objects.create(key=f"k:{XSS}", task_id="t-1", expires_at=now + timedelta(1))
    UniqueLock.objects.create(key="old", task_id="t-2", expires_at=now - timedelta(seconds=1))
    bucket = RateLimitBucket.objects.create(name=XSS, tokens=-2.5, updated_at=now)
    for model, row in (("uniquelock", held), ("ratelimitbucket", bucket)):
        for url in (admin_url(model), admin_url(model, "change", row.pk)):
            content = admin_client.get(url).content.decode()
            assert XSS not in content
    content = admin_client.get(admin_url("uniquelock")).content.decode()
    assert ">held</span>" in content and ">stale</span>" in content
    assert "-2.50" in admin_client.get(admin_url("ratelimitbucket")).content.decode()
    assert admin_client.get(admin_url("uniquelock", "add")).status_code == 403


@pytest.mark.db
def test_deleting_a_lock_frees_its_key(admin_client: Any) -> None:
    first = sync_user.delay(1)
    lock = UniqueLock.objects.get()
    response = admin_client.post(admin_url("uniquelock", "delete", lock.pk), {"post": "yes"})
    assert response.status_code == 302
    assert sync_user.delay(1).id != first.id
