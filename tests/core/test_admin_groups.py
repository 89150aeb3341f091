"""The group results screen and the workflow graph page: they render, escape, need permissions."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from django_tq import chain, group
from django_tq.models import GroupResult, TaskResult
from django_tq.testing import capture
from tests.testapp.tasks import add, mul, tsum

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]

XSS = "<script>alert(1)</script>"


@pytest.fixture
def workflow() -> Any:
    with capture() as queue:
        result = chain(add.s(1, 1), group(add.s(1), mul.s(2)), tsum.s()).delay()
        queue.run_all()
    return result


def test_group_screens_list_members_with_states(admin_client: Any, workflow: Any) -> None:
    listing = admin_client.get(reverse("admin:django_tq_groupresult_changelist"))
    assert listing.status_code == 200
    row = GroupResult.objects.get()
    page = admin_client.get(reverse("admin:django_tq_groupresult_change", args=[row.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    for task_id in row.result_ids:
        assert task_id[:8] in body
    assert "SUCCESS" in body and "chord header" in body


def test_the_graph_is_linked_from_a_task_result_and_shows_the_tree(
    admin_client: Any, workflow: Any
) -> None:
    root = TaskResult.objects.get(task_id=workflow.parent.parent.id)
    page = admin_client.get(reverse("admin:django_tq_taskresult_change", args=[root.pk]))
    graph = reverse("admin:django_tq_workflow_graph", args=[root.task_id])
    assert graph in page.content.decode()
    shown = admin_client.get(graph)
    assert shown.status_code == 200
    text = shown.content.decode()
    # the tree is rendered on one line; the admin's own page holds lists too (Django 6)
    tree = next(line for line in text.splitlines() if 'class="tq-workflow"' in line)
    assert tree.count("<li>") == 5  # add -> chord(add, mul) -> tsum
    assert "tests.testapp.tasks.tsum" in text and "(this task)" in text


def test_the_graph_escapes_task_names(admin_client: Any) -> None:
    TaskResult.objects.create(task_id="evil-1", task_name=XSS, root_id="evil-1")
    text = admin_client.get(reverse("admin:django_tq_workflow_graph", args=["evil-1"])).content
    assert XSS.encode() not in text and b"&lt;script&gt;" in text
    missing = admin_client.get(reverse("admin:django_tq_workflow_graph", args=["nope"]))
    assert missing.status_code == 404


def test_the_graph_needs_the_view_permission(client: Any, django_user_model: Any) -> None:
    TaskResult.objects.create(task_id="t-1", task_name="x", root_id="t-1")
    staff = django_user_model.objects.create_user("staff", password=None, is_staff=True)
    client.force_login(staff)
    url = reverse("admin:django_tq_workflow_graph", args=["t-1"])
    assert client.get(url).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    assert client.get(url).status_code == 200
