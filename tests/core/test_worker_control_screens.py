"""The live worker actions in the admin and the REST API, against real workers."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_tq import states
from django_tq.models import ControlCommand, TaskResult, WorkerState
from tests.conftest import wait_for
from tests.testapp.tasks import echo_types, slow_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.django_version]

XSS = "<script>alert(1)</script>"
CHANGELIST = "admin:django_tq_workerstate_changelist"


def _user(django_user_model: Any, name: str, *, control: bool) -> Client:
    user = django_user_model.objects.create_user(name, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_workerstate"))
    if control:
        user.user_permissions.add(Permission.objects.get(codename="control_workerstate"))
    client = Client()
    client.force_login(user)
    return client


def _action(client: Client, action: str, worker: WorkerState, **extra: str) -> Any:
    return client.post(
        reverse(CHANGELIST),
        {"action": action, "_selected_action": [str(worker.pk)], **extra},
        follow=True,
    )


def _messages(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _row(hostname: str) -> WorkerState:
    return wait_for(lambda: WorkerState.objects.filter(hostname=hostname).first(), 20)


def test_admin_grows_a_pool_after_confirming_and_shuts_a_worker_down(
    django_user_model, queue_name, settings, start_worker
):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    worker = start_worker("-n", "screen@test", "-P", "threads", "-c", "1")
    row = _row("screen@test")
    operator = _user(django_user_model, "operator", control=True)
    page = _action(operator, "pool_grow_workers", row)
    assert page.status_code == 200 and b"Grow worker pools" in page.content
    assert b"screen@test" in page.content and not ControlCommand.objects.exists()
    done = _action(operator, "pool_grow_workers", row, post="yes", n="2")
    assert _messages(done) == ["screen@test: pool size 3"]
    page = _action(operator, "add_consumer_workers", row)
    assert b"Consume another queue" in page.content
    done = _action(operator, "add_consumer_workers", row, post="yes", queue=f"{queue_name}-b")
    assert _messages(done) == [f"screen@test: consuming {queue_name}-b"]
    page = _action(operator, "shutdown_workers", row)
    assert b"shut down warm" in page.content
    done = _action(operator, "shutdown_workers", row, post="yes")
    assert _messages(done) == ["screen@test: warm shutdown: running tasks finish first"]
    assert worker.process.wait(30) == 0


def test_admin_actions_need_the_control_permission(
    django_user_model, queue_name, settings, start_worker
):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    worker = start_worker("-n", "guarded@test", "-P", "solo")
    row = _row("guarded@test")
    viewer = _user(django_user_model, "viewer", control=False)
    page = viewer.get(reverse(CHANGELIST))
    assert b"shutdown_workers" not in page.content  # not offered
    _action(viewer, "shutdown_workers", row, post="yes")
    assert not ControlCommand.objects.exists()
    assert worker.process.poll() is None


def test_the_change_page_shows_active_tasks_escaped(
    admin_client, queue_name, settings, start_worker
):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    start_worker("-n", "busy@test", "-P", "prefork", "-c", "1")
    row = _row("busy@test")
    running = slow_record.delay(5, XSS)
    wait_for(lambda: TaskResult.objects.filter(task_id=running.id, state=states.STARTED).exists())
    page = admin_client.get(reverse("admin:django_tq_workerstate_change", args=[row.pk]))
    html = page.content.decode()
    assert running.id in html and "tests.testapp.tasks.slow_record" in html
    assert XSS not in html and "&lt;script&gt;" in html


def test_a_lost_worker_page_does_not_wait(admin_client):
    row = WorkerState.objects.create(
        hostname="gone@test",
        pid=1,
        pool="prefork",
        concurrency=1,
        started_at=timezone.now(),
        last_heartbeat=timezone.now() - dt.timedelta(minutes=5),
    )
    started = time.monotonic()
    page = admin_client.get(reverse("admin:django_tq_workerstate_change", args=[row.pk]))
    assert page.status_code == 200 and time.monotonic() - started < 1
    assert not ControlCommand.objects.exists()


# -- REST ---------------------------------------------------------------------------------------------
API = "/api/tq/workers/"


def _json(client: Client, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = getattr(client, method)(
        path, data=json.dumps(body) if body is not None else None, content_type="application/json"
    )
    return response.status_code, response.json()


def test_rest_active_and_control(django_user_model, queue_name, settings, start_worker):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    start_worker("-n", "api@test", "-P", "threads", "-c", "1")
    _row("api@test")
    viewer = _user(django_user_model, "viewer", control=False)
    operator = _user(django_user_model, "operator", control=True)
    running = slow_record.delay(3, "api")
    wait_for(lambda: TaskResult.objects.filter(task_id=running.id, state=states.STARTED).exists())
    status, active = _json(viewer, "get", f"{API}api@test/active/")
    assert status == 200 and [task["id"] for task in active] == [running.id]
    status, _ = _json(viewer, "post", f"{API}api@test/control/", {"command": "pool_grow"})
    assert status == 403
    status, body = _json(
        operator, "post", f"{API}api@test/control/", {"command": "pool_grow", "n": 2}
    )
    assert status == 200 and body["reply"]["concurrency"] == 3
    status, body = _json(operator, "post", f"{API}api@test/control/", {"command": "reboot"})
    assert status == 400
    status, body = _json(operator, "post", f"{API}api@test/control/", {"command": "add_consumer"})
    assert status == 400 and "queue" in json.dumps(body)
    extra = f"{queue_name}-more"
    status, body = _json(
        operator, "post", f"{API}api@test/control/", {"command": "add_consumer", "queue": extra}
    )
    assert status == 200 and body["reply"]["queues"] == [queue_name, extra]
    status, _ = _json(operator, "get", f"{API}nobody@test/active/")
    assert status == 404
    assert echo_types.delay(1).get(timeout=20) == "int"


def test_rest_answers_504_for_a_worker_that_does_not_reply(django_user_model):
    WorkerState.objects.create(
        hostname="silent@test",
        pid=1,
        pool="prefork",
        concurrency=1,
        started_at=timezone.now(),
        last_heartbeat=timezone.now(),
    )
    operator = _user(django_user_model, "operator", control=True)
    started = time.monotonic()
    status, body = _json(operator, "post", f"{API}silent@test/control/", {"command": "shutdown"})
    assert status == 504 and "did not answer" in json.dumps(body)
    assert time.monotonic() - started < 10
