"""Stored ``<script>`` never runs: escaped in every admin page showing it, JSON strings in REST.

Tasks put whatever they like in their arguments, results, meta and tracebacks, and a message's
sender chooses its task name, queue and headers: all of it is hostile input to the admin.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse

from django_tq import states
from django_tq.models import GroupResult, TaskResult
from tests.core.test_admin import ESCAPED, XSS, admin_url, make_result

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]

API = "/api/tq/"


@pytest.fixture
def hostile() -> TaskResult:
    return make_result(
        "evil-1",
        task_name=f"evil.{XSS}",
        state=states.FAILURE,
        queue=f"q{XSS}",
        worker=f"w{XSS}",
        args=[XSS, {"nested": [XSS]}],
        kwargs={XSS: XSS},
        result={"exc_type": XSS, "exc_message": XSS, "exc_args": [XSS]},
        traceback=f"Traceback (most recent call last):\n{XSS}",
        meta={"label": XSS},
        root_id=XSS,
        parent_id=XSS,
        group_id=XSS,
    )


def _pages(hostile: TaskResult) -> list[tuple[str, Any]]:
    changelist = admin_url("taskresult")
    group = GroupResult.objects.create(group_id=XSS, result_ids=[hostile.task_id], root_id=XSS)
    return [
        ("groups", (admin_url("groupresult"), {})),
        ("group", (admin_url("groupresult", "change", group.pk), {})),
        ("graph", (reverse("admin:django_tq_workflow_graph", args=[hostile.task_id]), {})),
        ("list", (changelist, {})),
        ("search", (changelist, {"q": XSS})),
        ("filter", (changelist, {"task_name": hostile.task_name, "queue": hostile.queue})),
        ("detail", (admin_url("taskresult", "change", hostile.pk), {})),
        ("dead letters of", (admin_url("deadletter"), {"task_id": XSS})),
    ]


def test_every_admin_page_showing_a_result_escapes_it(
    admin_client: Any, hostile: TaskResult
) -> None:
    for name, (url, query) in _pages(hostile):
        response = admin_client.get(url, query)
        assert response.status_code == 200, name
        content = response.content.decode()
        assert XSS not in content, name
        if name != "dead letters of":
            assert ESCAPED in content, name


def test_the_requeue_page_escapes_the_arguments(admin_client: Any, hostile: TaskResult) -> None:
    data = {"action": "requeue_tasks", "_selected_action": [str(hostile.pk)]}
    content = admin_client.post(admin_url("taskresult"), data).content.decode()
    assert "requeue" in content and XSS not in content and ESCAPED in content


def test_rest_returns_hostile_strings_as_json_strings(
    admin_client: Any, hostile: TaskResult
) -> None:
    detail = admin_client.get(f"{API}results/evil-1/")
    assert detail["Content-Type"] == "application/json"
    body = json.loads(detail.content)
    assert body["args"] == [XSS, {"nested": [XSS]}] and body["kwargs"] == {XSS: XSS}
    assert body["result"]["exc_message"] == XSS and body["meta"] == {"label": XSS}
    assert body["traceback"].endswith(XSS) and body["task_name"] == f"evil.{XSS}"
    listed = admin_client.get(f"{API}results/", {"task_name": hostile.task_name})
    assert listed["Content-Type"] == "application/json"
    assert [row["task_id"] for row in listed.json()["results"]] == ["evil-1"]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        (f"results/{XSS}/", {}),
        (f"{XSS}/", {}),
        ("results/", {"ordering": XSS}),
        ("results/", {XSS: "1"}),
        ("periodic-tasks/", {"enabled": XSS}),
    ],
)
def test_rest_errors_echoing_input_are_json_too(
    admin_client: Any, path: str, query: dict[str, str]
) -> None:
    response = admin_client.get(API + path, query)
    assert response.status_code in (400, 404)
    assert response["Content-Type"] == "application/json"
    assert isinstance(json.loads(response.content), dict)
