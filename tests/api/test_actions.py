"""``results/{id}/retry/`` and ``tasks/{name}/enqueue/``: what they send, what they refuse."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from django_tq import states
from django_tq.models import TaskResult
from django_tq.testing import CapturedQueue
from tests.api.conftest import ADD, API, Users, make_result

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]

WHEN = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)
TAGGED_WHEN = {"__tq__": "datetime", "v": WHEN.isoformat()}


def retry(users: Users, task_id: str, body: Any = None, role: str = "staff_with_perms") -> Any:
    return users.client(role).call("post", f"{API}results/{task_id}/retry/", body or {})


def enqueue(users: Users, body: Any, role: str = "user", name: str = ADD) -> Any:
    return users.client(role).call("post", f"{API}tasks/{name}/enqueue/", body)


# -- requeue -------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [states.FAILURE, states.DEAD, states.REVOKED])
def test_requeue_sends_the_stored_call_again_as_a_new_task(
    users: Users, tq_capture: CapturedQueue, state: str
) -> None:
    make_result(
        "failed-1",
        state=state,
        queue="mail",
        args=[TAGGED_WHEN, 2],
        kwargs={"note": "x"},
        owner=users.user,
    )
    response = retry(users, "failed-1")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["requeued_from"] == "failed-1"
    assert body["task_id"] != "failed-1"
    assert body["url"].endswith(f"/api/tq/results/{body['task_id']}/")
    (message,) = tq_capture.assert_enqueued(ADD, count=1)
    assert (message.id, message.args, message.kwargs, message.queue) == (
        body["task_id"],
        (WHEN, 2),  # the stored tagged datetime arrives as a datetime again
        {"note": "x"},
        "mail",
    )
    new = TaskResult.objects.get(task_id=body["task_id"])
    assert (new.state, new.owner_id) == (states.QUEUED, users.user.pk)  # still the owner's
    assert TaskResult.objects.get(task_id="failed-1").state == state  # the old row is kept


def test_requeue_with_edited_arguments_and_another_queue(
    users: Users, tq_capture: CapturedQueue
) -> None:
    make_result("failed-1", state=states.FAILURE, args=[1, 2], kwargs={"a": 1})
    response = retry(users, "failed-1", {"args": [5, TAGGED_WHEN], "kwargs": {}, "queue": "io"})
    assert response.status_code == 202, response.content
    (message,) = tq_capture.messages
    assert (message.args, message.kwargs, message.queue) == ((5, WHEN), {}, "io")


@pytest.mark.parametrize("state", [states.SUCCESS, states.QUEUED, states.STARTED, "PROGRESS"])
def test_requeue_refuses_tasks_that_did_not_fail(
    users: Users, tq_capture: CapturedQueue, state: str
) -> None:
    make_result("ok-1", state=state)
    response = retry(users, "ok-1")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert state in response.json()["detail"]
    assert not tq_capture.messages


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"args": "1, 2"}, "args"),
        ({"args": {"a": 1}}, "args"),
        ({"kwargs": [1]}, "kwargs"),
        ({"queue": "bad queue!"}, "queue"),
        ({"queue": ""}, "queue"),
        ({"queue": "q" * 201}, "queue"),
        ({"args": [{"__tq__": "decimal", "v": "not a number"}]}, "args"),
        ({"args": [{"__tq__": "datetime", "v": "yesterday"}]}, "args"),
        ({"args": [1, 2, 3]}, "non_field_errors"),  # add(x, y): checked against the signature
        ({"args": ["\x00", 2]}, "args"),  # PostgreSQL cannot store it
        ({"kwargs": {"z": 1}}, "non_field_errors"),
    ],
)
def test_requeue_validates_the_body(
    users: Users, tq_capture: CapturedQueue, body: Any, field: str
) -> None:
    make_result("failed-1", state=states.FAILURE)
    response = retry(users, "failed-1", body)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not tq_capture.messages


def test_requeue_of_an_unknown_id_is_404(users: Users) -> None:
    assert retry(users, "nope").status_code == 404


# -- enqueue -------------------------------------------------------------------------------
def test_enqueue_then_poll_the_result_as_its_owner(
    users: Users, tq_capture: CapturedQueue, allow_enqueue: None
) -> None:
    response = enqueue(users, {"args": [2, 3]})
    assert response.status_code == 202, response.content
    url = response.json()["url"]
    client = users.client("user")
    assert client.get(url).json()["state"] == states.QUEUED
    assert users.client("other").get(url).status_code == 404

    tq_capture.run_all()
    done = client.get(url).json()
    assert (done["state"], done["result"], done["owner"]["username"]) == ("SUCCESS", 5, "alice")


def test_enqueue_with_queue_and_countdown(
    users: Users, tq_capture: CapturedQueue, allow_enqueue: None
) -> None:
    before = timezone.now()
    response = enqueue(users, {"args": [1, 1], "kwargs": {}, "queue": "io", "countdown": 60})
    assert response.status_code == 202, response.content
    (message,) = tq_capture.messages
    assert message.queue == "io"
    assert message.eta is not None
    assert dt.timedelta(seconds=59) < message.eta - before < dt.timedelta(seconds=62)


def test_enqueue_to_an_undeclared_queue_is_a_400_when_queues_are_not_created(
    users: Users, tq_capture: CapturedQueue, allow_enqueue: None, settings: Any
) -> None:
    settings.TQ = {**settings.TQ, "QUEUES": {"default": {}}, "CREATE_MISSING_QUEUES": False}
    response = enqueue(users, {"args": [1, 1], "queue": "io"})
    assert response.status_code == 400
    assert "'io' is not declared" in response.json()["queue"][0]
    assert not tq_capture.messages and not TaskResult.objects.exists()


def test_only_allowlisted_tasks_can_be_enqueued(users: Users, tq_capture: CapturedQueue) -> None:
    response = enqueue(users, {"args": [1, 2]}, role="superuser")  # allowlist is empty
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert not tq_capture.messages


def test_allowlisted_but_without_the_permission_is_403(
    users: Users, tq_capture: CapturedQueue, allow_enqueue: None
) -> None:
    assert enqueue(users, {"args": [1, 2]}, role="other").status_code == 403
    assert not tq_capture.messages


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"countdown": -1}, "countdown"),
        ({"countdown": 1e300}, "countdown"),
        ({"countdown": "soon"}, "countdown"),
        ({"args": None}, "args"),
        ([1, 2], "non_field_errors"),
        ({"kwargs": {"x": 1, "y": {"\x00": 1}}}, "kwargs"),  # PostgreSQL cannot store it
    ],
)
def test_enqueue_validates_the_body(
    users: Users, tq_capture: CapturedQueue, allow_enqueue: None, body: Any, field: str
) -> None:
    response = enqueue(users, body)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not tq_capture.messages


@pytest.mark.parametrize(
    "raw", ['{"args": [1, 2]', "not json", '{"countdown": NaN}', '{"args": [Infinity]}', "\x00"]
)
def test_malformed_json_is_a_json_400(users: Users, allow_enqueue: None, raw: str) -> None:
    response = enqueue(users, raw)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "parse_error"


def test_a_body_that_is_not_json_is_415(users: Users, allow_enqueue: None) -> None:
    response = users.client("user").post(f"{API}tasks/{ADD}/enqueue/", {"args": "1"})  # a form
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_too_large_a_message_is_a_json_413(
    users: Users, allow_enqueue: None, settings: Any
) -> None:
    settings.TQ = {**settings.TQ, "MAX_PAYLOAD_BYTES": 2048}
    response = enqueue(users, {"args": ["x" * 5000, 1]})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert not TaskResult.objects.exists()


def revoke(users: Users, task_id: str, body: Any = None, role: str = "staff_with_perms") -> Any:
    return users.client(role).call("post", f"{API}results/{task_id}/revoke/", body or {})


def test_revoke_marks_a_queued_task_revoked_and_stores_the_revocation(users: Users) -> None:
    from django_tq.models import Revocation, TaskResult

    TaskResult.objects.create(task_id="queued-1", task_name="x", state=states.QUEUED)
    response = revoke(users, "queued-1", {"terminate": True, "signal": "SIGKILL"})
    assert response.status_code == 202, response.content
    assert response.json() == {"task_id": "queued-1", "state": "REVOKED", "terminate": True}
    revocation = Revocation.objects.get(task_id="queued-1")
    assert (revocation.terminate, revocation.signal) == (True, "SIGKILL")


def test_revoke_validates_the_body_and_refuses_users(users: Users) -> None:
    from django_tq.models import TaskResult

    TaskResult.objects.create(task_id="queued-2", task_name="x", state=states.QUEUED)
    assert revoke(users, "queued-2", {"signal": "SIGNOPE"}).status_code == 400
    assert revoke(users, "queued-2", role="staff").status_code in (403, 404)
    assert revoke(users, "nope").status_code == 404
