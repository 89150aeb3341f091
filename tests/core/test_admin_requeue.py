"""The admin's requeue action: a confirmation page to change the queue and (one task) arguments."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.test import Client

from django_tq import states
from django_tq.models import TaskResult
from django_tq.testing import capture
from tests.core.test_admin import ESCAPED, XSS, _act, make_result

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]

WHEN = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)
TAGGED_WHEN = {"__tq__": "datetime", "v": WHEN.isoformat()}


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("admin", "admin@example.com", None)


def test_the_action_asks_first_and_sends_nothing(admin_client: Any) -> None:
    make_result("failed-1", state=states.FAILURE, args=[XSS, 2], kwargs={"note": XSS})
    make_result("done-1", state=states.SUCCESS)
    with capture() as queue:
        response = _act(admin_client, "requeue_tasks", "failed-1", "done-1")
    assert response.status_code == 200
    assert response.templates[0].name == "admin/django_tq/taskresult/requeue_confirmation.html"
    content = response.content.decode()
    assert "failed-1" in content and "skipped: not FAILURE, DEAD or REVOKED" in content
    assert 'name="post" value="yes"' in content and "csrfmiddlewaretoken" in content
    # one task can be requeued: its arguments are offered for editing, escaped
    assert 'name="args"' in content and 'name="kwargs"' in content
    assert XSS not in content and ESCAPED in content
    assert not queue.messages


def test_edited_arguments_and_another_queue(admin_client: Any, django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user("someone", password=None)
    make_result("failed-1", state=states.FAILURE, args=[1, 2], kwargs={}, queue="q1", owner=owner)
    with capture() as queue:
        response = _act(
            admin_client,
            "requeue_tasks",
            "failed-1",
            post="yes",
            queue="elsewhere",
            args=json.dumps([TAGGED_WHEN, 5]),
            kwargs="{}",
        )
    assert "Requeued 1 task(s)." in response.content.decode()
    (message,) = queue.messages
    assert (message.args, message.kwargs, message.queue) == ((WHEN, 5), {}, "elsewhere")
    assert TaskResult.objects.get(task_id=message.id).owner == owner
    assert TaskResult.objects.get(task_id="failed-1").state == states.FAILURE  # kept as it was


def test_unchanged_arguments_are_sent_as_stored(admin_client: Any) -> None:
    make_result("failed-1", state=states.FAILURE, args=[TAGGED_WHEN, 2], kwargs={}, queue="q1")
    with capture() as queue:
        page = _act(admin_client, "requeue_tasks", "failed-1")
        form = page.context["form"]
        fields = {name: form[name].value() for name in ("args", "kwargs")}  # the JSON shown
        done = _act(
            admin_client,
            "requeue_tasks",
            "failed-1",
            post="yes",
            queue="",
            **fields,
        )
    assert "Requeued 1 task(s)." in done.content.decode()
    (message,) = queue.messages
    assert (message.args, message.queue) == ((WHEN, 2), "q1")


def test_empty_argument_fields_keep_the_stored_ones(admin_client: Any) -> None:
    make_result("failed-1", state=states.FAILURE, args=[1, 2], kwargs={})
    with capture() as queue:
        _act(admin_client, "requeue_tasks", "failed-1", post="yes", args=" ", kwargs="")
    (message,) = queue.messages
    assert (message.args, message.kwargs) == ((1, 2), {})


def test_several_tasks_share_only_the_queue(admin_client: Any) -> None:
    make_result("failed-1", state=states.FAILURE, args=[1, 2], queue="q1")
    make_result("dead-1", state=states.DEAD, args=[3, 4], queue="q2")
    page = _act(admin_client, "requeue_tasks", "failed-1", "dead-1").content.decode()
    assert 'name="args"' not in page and "Select a single task" in page
    with capture() as queue:
        _act(admin_client, "requeue_tasks", "failed-1", "dead-1", post="yes", queue="io")
    assert sorted((m.args, m.queue) for m in queue.messages) == [((1, 2), "io"), ((3, 4), "io")]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"args": "[1, 2"}, "Not valid JSON"),
        ({"args": '{"x": 1}'}, "must be a JSON list"),
        ({"kwargs": "[1]"}, "must be a JSON object"),
        ({"args": "[1, 2, 3]"}, "do not fit tests.testapp.tasks.add(x, y)"),
        ({"kwargs": '{"z": 1}'}, "do not fit tests.testapp.tasks.add(x, y)"),
        ({"args": '[{"__tq__": "datetime", "v": "yesterday"}]'}, "Invalid tagged value"),
        ({"queue": "bad queue!"}, "Enter a valid value"),
        ({"args": '["\\u0000", 2]'}, "cannot contain the NUL character"),  # PostgreSQL refuses it
    ],
)
def test_bad_input_shows_the_form_again_and_sends_nothing(
    admin_client: Any, fields: dict[str, str], error: str
) -> None:
    make_result("failed-1", state=states.FAILURE, args=[1, 2], kwargs={})
    data = {"args": "[1, 2]", "kwargs": "{}", **fields}
    with capture() as queue:
        response = _act(admin_client, "requeue_tasks", "failed-1", post="yes", **data)
    assert response.status_code == 200
    assert "requeue_confirmation" in response.templates[0].name
    assert error in response.content.decode()
    assert not queue.messages


def test_confirming_needs_the_change_permission(client: Any, django_user_model: Any) -> None:
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("viewer", password=None, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    client.force_login(staff)
    make_result("failed-1", state=states.FAILURE)
    with capture() as queue:
        response = _act(client, "requeue_tasks", "failed-1", post="yes", queue="io")
    assert "requeue_confirmation" not in response.templates[0].name
    assert not queue.messages


def test_confirming_needs_csrf(admin_user: Any) -> None:
    make_result("failed-1", state=states.FAILURE)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    with capture() as queue:
        response = _act(client, "requeue_tasks", "failed-1", post="yes")
    assert response.status_code == 403
    assert not queue.messages
