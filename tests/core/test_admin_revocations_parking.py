"""The revocations and parked messages screens: escaped, filtered, and their actions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from django_tq import control, states
from django_tq.models import ParkedMessage, Revocation, TaskResult
from tests.conftest import wait_for
from tests.core.test_admin import ESCAPED, XSS, admin_url, make_result
from tests.testapp.models import Execution
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_version

MODELS = ["revocation", "parkedmessage"]


@pytest.fixture
def rows(db: None) -> dict[str, Any]:
    make_result("queued-1", state=states.QUEUED, task_name=f"evil.{XSS}")
    make_result("running-1", state=states.STARTED)
    control.revoke("queued-1")
    control.revoke("running-1", terminate=True, signal="SIGKILL")
    record.apply_async((XSS,), countdown=3600)
    record.apply_async(("later",), countdown=7200, queue="mail")
    return {
        "revocation": Revocation.objects.get(task_id="queued-1"),
        "parkedmessage": ParkedMessage.objects.order_by("due_at").first(),
    }


def _act(client: Any, model: str, action: str, *pks: int) -> Any:
    data = {"action": action, "_selected_action": [str(pk) for pk in pks]}
    return client.post(admin_url(model), data, follow=True)


@pytest.mark.parametrize("model", MODELS)
def test_pages_render_escaped(admin_client: Any, rows: dict[str, Any], model: str) -> None:
    listing = admin_client.get(admin_url(model))
    assert listing.status_code == 200 and XSS not in listing.content.decode()
    page = admin_client.get(admin_url(model, "change", rows[model].pk))
    assert page.status_code == 200
    content = page.content.decode()
    assert XSS not in content and ESCAPED in content


def test_revocations_show_the_task_and_filter(admin_client: Any, rows: dict[str, Any]) -> None:
    content = admin_client.get(admin_url("revocation")).content.decode()
    assert ">REVOKED</span>" in content and ">STARTED</span>" in content  # the task's state
    assert ">terminate if running</span>" in content and ">skip</span>" in content
    killed = admin_client.get(admin_url("revocation"), {"terminate__exact": "1"})
    assert [row.task_id for row in killed.context["cl"].result_list] == ["running-1"]
    found = admin_client.get(admin_url("revocation"), {"q": "queued-1"})
    assert [row.task_id for row in found.context["cl"].result_list] == ["queued-1"]


@pytest.mark.parametrize("model", MODELS)
def test_nothing_can_be_added_changed_or_deleted(
    admin_client: Any, rows: dict[str, Any], model: str
) -> None:
    pk = rows[model].pk
    assert admin_client.get(admin_url(model, "add")).status_code == 403
    assert admin_client.post(admin_url(model, "change", pk), {}).status_code == 403
    assert admin_client.get(admin_url(model, "delete", pk)).status_code == 403
    assert type(rows[model]).objects.filter(pk=pk).exists()


def test_parked_messages_filter_and_search(admin_client: Any, rows: dict[str, Any]) -> None:
    mail = admin_client.get(admin_url("parkedmessage"), {"queue": "mail"}).context["cl"]
    assert [row.queue for row in mail.result_list] == ["mail"]
    task_id = rows["parkedmessage"].task_id
    found = admin_client.get(admin_url("parkedmessage"), {"q": task_id}).context["cl"]
    assert [row.task_id for row in found.result_list] == [task_id]


def test_revoking_a_parked_task_marks_it_and_removes_the_message(
    admin_client: Any, rows: dict[str, Any]
) -> None:
    parked = rows["parkedmessage"]
    response = _act(admin_client, "parkedmessage", "revoke_tasks", parked.pk)
    assert "Revoked 1 task(s)." in response.content.decode()
    assert TaskResult.objects.get(task_id=parked.task_id).state == states.REVOKED
    assert Revocation.objects.filter(task_id=parked.task_id).exists()
    assert not ParkedMessage.objects.filter(pk=parked.pk).exists()
    assert ParkedMessage.objects.count() == 1  # the other one is untouched


def test_actions_need_the_change_permission(
    client: Any, django_user_model: Any, rows: dict[str, Any]
) -> None:
    staff = django_user_model.objects.create_user("viewer", password=None, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_parkedmessage"))
    client.force_login(staff)
    page = client.get(admin_url("parkedmessage")).content.decode()
    assert "release_now" not in page and "revoke_tasks" not in page
    parked = rows["parkedmessage"]
    _act(client, "parkedmessage", "release_now", parked.pk)
    _act(client, "parkedmessage", "revoke_tasks", parked.pk)
    parked.refresh_from_db()
    assert parked.due_at > timezone.now() + dt.timedelta(minutes=50)
    assert TaskResult.objects.get(task_id=parked.task_id).state == states.QUEUED


@pytest.mark.django_db(transaction=True)
def test_release_now_runs_the_task_at_once_on_a_running_worker(
    admin_client: Any, broker_url: str, start_worker: Any
) -> None:
    start_worker("-P", "solo")
    result = record.apply_async(("released",), countdown=3600)
    parked = ParkedMessage.objects.get(task_id=result.id)
    response = _act(admin_client, "parkedmessage", "release_now", parked.pk)
    assert "1 message released" in response.content.decode()
    assert result.get(timeout=20) == "released"
    assert Execution.objects.filter(label="released").count() == 1
    wait_for(lambda: not ParkedMessage.objects.exists(), what="the parked row removed")
    assert TaskResult.objects.get(task_id=result.id).eta is not None
