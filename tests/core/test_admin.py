"""The admin screens: they render for staff, escape what tasks stored, and stay read-only."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_tq import states
from django_tq.models import DeadLetter, OutboxMessage, QueueMessage, TaskResult, WorkerState

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]

XSS = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
MODELS = ["taskresult", "deadletter", "workerstate", "queuemessage", "outboxmessage"]


def admin_url(model: str, view: str = "changelist", *args: Any) -> str:
    return reverse(f"admin:django_tq_{model}_{view}", args=args)


def make_result(task_id: str, **fields: Any) -> TaskResult:
    values: dict[str, Any] = {
        "task_name": "tests.testapp.tasks.add",
        "state": states.SUCCESS,
        "queue": "default",
        "worker": "tq@test",
    }
    values.update(fields)
    return TaskResult.objects.create(task_id=task_id, **values)


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    """A superuser without a password (pytest-django's hashes one, which is slow); logged in by admin_client."""
    return django_user_model.objects.create_superuser("admin", "admin@example.com", None)


@pytest.fixture
def rows(django_user_model: Any) -> dict[str, Any]:
    """One row of every kind, with hostile strings wherever a task or a message can put them."""
    now = timezone.now()
    owner = django_user_model.objects.create_user("owner", password=None)
    success = make_result(
        "ok-1",
        args=[XSS, 2],
        kwargs={"note": XSS},
        result={"html": XSS},
        owner=owner,
        date_done=now,
    )
    failure = make_result(
        "failed-1",
        task_name="tests.testapp.tasks.fail",
        state=states.FAILURE,
        queue="other",
        worker="tq@elsewhere",
        result={"exc_type": "builtins.ValueError", "exc_message": XSS, "exc_args": [XSS]},
        traceback=f'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: {XSS}',
        root_id="ok-1",
        parent_id="ok-1",
        date_done=now,
    )
    progress = make_result("progress-1", state="PROGRESS", meta={"step": 1, "label": XSS})
    dead = make_result(
        "dead-1", task_name="missing.task", state=states.DEAD, result={"reason": XSS}
    )
    letter = DeadLetter.objects.create(
        task_id="dead-1",
        task_name="missing.task",
        queue="default",
        reason=f"unknown task: {XSS}",
        content_type="application/json",
        headers={"id": "dead-1", "task": XSS},
        payload=XSS,
        worker="tq@test",
    )
    message = QueueMessage.objects.create(
        queue="default",
        priority=5,
        payload=json.dumps({"headers": {"task": XSS}, "body": XSS}),
        not_before=now,
        lease_owner="host:1:1:abc",
        lease_expires_at=now + timedelta(seconds=60),
        delivery_count=1,
        created_at=now,
    )
    outbox = OutboxMessage.objects.create(
        task_id="outbox-1",
        task_name=XSS,
        queue="default",
        headers={"id": "outbox-1", "task": XSS},
        body=json.dumps({"args": [XSS], "kwargs": {}}),
        content_type="application/json",
    )
    alive = WorkerState.objects.create(
        hostname="tq@alive",
        pid=10,
        queues=["default", "mail"],
        pool="prefork",
        concurrency=2,
        started_at=now,
        last_heartbeat=now,
    )
    lost = WorkerState.objects.create(
        hostname="tq@lost",
        pid=11,
        queues=["default"],
        pool="threads",
        concurrency=4,
        started_at=now - timedelta(hours=1),
        last_heartbeat=now - timedelta(minutes=10),
    )
    return {
        "taskresult": success,
        "failure": failure,
        "progress": progress,
        "dead": dead,
        "deadletter": letter,
        "queuemessage": message,
        "outboxmessage": outbox,
        "workerstate": alive,
        "lost": lost,
    }


@pytest.mark.parametrize("model", MODELS)
def test_changelists_render_for_staff_and_escape(
    admin_client: Any, rows: dict[str, Any], model: str
) -> None:
    response = admin_client.get(admin_url(model))
    assert response.status_code == 200
    assert XSS not in response.content.decode()


@pytest.mark.parametrize("model", MODELS)
def test_change_pages_render_escaped(admin_client: Any, rows: dict[str, Any], model: str) -> None:
    response = admin_client.get(admin_url(model, "change", rows[model].pk))
    assert response.status_code == 200
    content = response.content.decode()
    assert XSS not in content
    if model != "workerstate":
        assert ESCAPED in content


def test_result_page_pretty_prints_arguments_and_shows_the_traceback(
    admin_client: Any, rows: dict[str, Any]
) -> None:
    content = admin_client.get(
        admin_url("taskresult", "change", rows["taskresult"].pk)
    ).content.decode()
    assert "&quot;note&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in content
    assert "<pre" in content
    failed = admin_client.get(
        admin_url("taskresult", "change", rows["failure"].pk)
    ).content.decode()
    assert f"ValueError: {ESCAPED}" in failed
    assert "root_id=ok-1" in failed  # the workflow link lists every task of the root
    assert XSS not in failed


def test_dead_result_links_to_its_dead_letters(admin_client: Any, rows: dict[str, Any]) -> None:
    content = admin_client.get(admin_url("taskresult", "change", rows["dead"].pk)).content.decode()
    assert admin_url("deadletter") + "?task_id=dead-1" in content


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"state": "FAILURE"}, {"failed-1"}),
        ({"task_name": "tests.testapp.tasks.fail"}, {"failed-1"}),
        ({"queue": "other"}, {"failed-1"}),
        ({"worker": "tq@elsewhere"}, {"failed-1"}),
        ({"q": "failed-1"}, {"failed-1"}),
        ({"q": "missing"}, {"dead-1"}),
        ({"root_id": "ok-1"}, {"failed-1"}),
        (
            {"date_created__gte": "2000-01-01 00:00:00+00:00"},
            {"ok-1", "failed-1", "progress-1", "dead-1"},
        ),
    ],
)
def test_result_filters_and_search(
    admin_client: Any, rows: dict[str, Any], query: dict[str, str], expected: set[str]
) -> None:
    response = admin_client.get(admin_url("taskresult"), query)
    assert response.status_code == 200
    shown = {result.task_id for result in response.context["cl"].result_list}
    assert shown == expected


def test_state_badges_are_coloured(admin_client: Any, rows: dict[str, Any]) -> None:
    content = admin_client.get(admin_url("taskresult")).content.decode()
    for state in ("SUCCESS", "FAILURE", "DEAD", "PROGRESS"):
        assert f">{state}</span>" in content


def test_workers_show_alive_and_lost(admin_client: Any, rows: dict[str, Any]) -> None:
    content = admin_client.get(admin_url("workerstate")).content.decode()
    assert ">alive</span>" in content
    assert ">lost</span>" in content
    alive = (
        admin_client.get(admin_url("workerstate"), {"liveness": "alive"}).context["cl"].result_list
    )
    lost = (
        admin_client.get(admin_url("workerstate"), {"liveness": "lost"}).context["cl"].result_list
    )
    assert [worker.hostname for worker in alive] == ["tq@alive"]
    assert [worker.hostname for worker in lost] == ["tq@lost"]


def test_queue_shows_leased_messages(admin_client: Any, rows: dict[str, Any]) -> None:
    content = admin_client.get(admin_url("queuemessage")).content.decode()
    assert ">leased</span>" in content
    assert "host:1:1:abc" in content


@pytest.mark.parametrize("model", MODELS)
def test_adding_is_forbidden(admin_client: Any, rows: dict[str, Any], model: str) -> None:
    assert admin_client.get(admin_url(model, "add")).status_code == 403
    assert admin_client.post(admin_url(model, "add"), {}).status_code == 403


def test_changing_is_forbidden(admin_client: Any, rows: dict[str, Any]) -> None:
    result = rows["taskresult"]
    response = admin_client.post(
        admin_url("taskresult", "change", result.pk), {"state": states.SUCCESS, "task_name": "x"}
    )
    assert response.status_code == 403
    result.refresh_from_db()
    assert result.task_name == "tests.testapp.tasks.add"


def test_queued_messages_cannot_be_deleted_but_results_can(
    admin_client: Any, rows: dict[str, Any]
) -> None:
    assert (
        admin_client.get(admin_url("queuemessage", "delete", rows["queuemessage"].pk)).status_code
        == 403
    )
    assert (
        admin_client.get(admin_url("outboxmessage", "delete", rows["outboxmessage"].pk)).status_code
        == 403
    )
    assert (
        admin_client.get(admin_url("taskresult", "delete", rows["taskresult"].pk)).status_code
        == 200
    )


@pytest.mark.parametrize("model", MODELS)
def test_non_staff_is_sent_to_the_login_page(
    client: Any, django_user_model: Any, model: str
) -> None:
    url = admin_url(model)
    anonymous = client.get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("admin:login"))
    user = django_user_model.objects.create_user("customer", password=None)
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_permissions_cannot_see_results(client: Any, django_user_model: Any) -> None:
    staff = django_user_model.objects.create_user("staff", password=None, is_staff=True)
    client.force_login(staff)
    assert client.get(admin_url("taskresult")).status_code == 403


def test_result_list_does_not_query_per_row(admin_client: Any, django_user_model: Any) -> None:
    def queries_for_list() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(admin_url("taskresult")).status_code == 200
        return len(captured)

    def add_results(prefix: str, count: int) -> None:
        for number in range(count):
            owner = django_user_model.objects.create_user(f"{prefix}{number}", password=None)
            make_result(f"{prefix}-{number}", owner=owner)

    add_results("few", 2)
    few = queries_for_list()
    add_results("many", 20)
    assert queries_for_list() == few


def _act(client: Any, action: str, *task_ids: str, **fields: str) -> Any:
    pks = TaskResult.objects.filter(task_id__in=task_ids).values_list("pk", flat=True)
    data = {"action": action, "_selected_action": [str(pk) for pk in pks], **fields}
    return client.post(admin_url("taskresult"), data, follow=True)


def test_revoke_and_terminate_actions(admin_client: Any) -> None:
    from django_tq.models import Revocation

    make_result("queued-1", state=states.QUEUED)
    make_result("running-1", state=states.STARTED)
    response = _act(admin_client, "revoke_tasks", "queued-1")
    assert "Revoked 1 task(s)." in response.content.decode()
    assert TaskResult.objects.get(task_id="queued-1").state == states.REVOKED
    _act(admin_client, "terminate_tasks", "running-1")
    assert Revocation.objects.get(task_id="running-1").terminate
    assert TaskResult.objects.get(task_id="running-1").state == states.STARTED  # until killed


def test_requeue_action_sends_failed_tasks_again_and_skips_others(
    admin_client: Any, django_user_model: Any
) -> None:
    from django_tq.testing import capture

    owner = django_user_model.objects.create_user("someone", password=None)
    make_result("failed-9", state=states.FAILURE, args=[1, 2], queue="q9", owner=owner)
    make_result("done-9", state=states.SUCCESS)
    with capture() as queue:
        response = _act(admin_client, "requeue_tasks", "failed-9", "done-9", post="yes")
    body = response.content.decode()
    assert "Requeued 1 task(s)." in body and "Not requeued" in body and "done-9" in body
    (message,) = queue.messages
    assert (message.task, message.args, message.queue) == ("tests.testapp.tasks.add", (1, 2), "q9")
    assert TaskResult.objects.get(task_id=message.id).owner == owner


def test_actions_need_the_change_permission(client: Any, django_user_model: Any) -> None:
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("viewer", password=None, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    client.force_login(staff)
    make_result("queued-2", state=states.QUEUED)
    page = client.get(admin_url("taskresult")).content.decode()
    assert "revoke_tasks" not in page and "requeue_tasks" not in page
    _act(client, "revoke_tasks", "queued-2")
    assert TaskResult.objects.get(task_id="queued-2").state == states.QUEUED


def test_actions_need_csrf(admin_user: Any) -> None:
    from django.test import Client

    make_result("queued-3", state=states.QUEUED)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = _act(client, "revoke_tasks", "queued-3")
    assert response.status_code == 403
    assert TaskResult.objects.get(task_id="queued-3").state == states.QUEUED
