"""``periodic-tasks/``: create, read, edit, delete and run periodic tasks with nested schedules."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from django_tq.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTaskRun,
    TaskResult,
)
from django_tq.testing import CapturedQueue
from tests.api.conftest import ADD, API, XSS, Users

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]

RECORD = "tests.testapp.tasks.record"
NIGHTLY = {
    "name": "nightly",
    "task": ADD,
    "crontab": {"minute": "0", "hour": "3", "timezone": "Europe/Paris"},
    "args": [1, 2],
}


def call(users: Users, method: str, path: str, body: Any = None, role: str = "superuser") -> Any:
    return users.client(role).call(method, API + path, body)


def create(users: Users, body: dict[str, Any], role: str = "superuser") -> Any:
    return call(users, "post", "periodic-tasks/", body, role)


def test_create_with_a_crontab_and_read_it_back(users: Users) -> None:
    response = create(users, NIGHTLY)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["crontab"] == {
        "minute": "0",
        "hour": "3",
        "day_of_month": "*",
        "month_of_year": "*",
        "day_of_week": "*",
        "timezone": "Europe/Paris",
    }
    assert body["interval"] is None and body["clocked"] is None
    assert body["schedule"] == str(CrontabSchedule.objects.get())
    assert body["next_run"] is not None and body["enabled"] is True
    assert body["url"].endswith(f"/api/tq/periodic-tasks/{body['id']}/")
    row = PeriodicTask.objects.get(pk=body["id"])
    assert (row.task, row.args, row.crontab.hour) == (ADD, [1, 2], "3")
    assert call(users, "get", f"periodic-tasks/{row.pk}/").json() == body


def test_the_same_schedule_is_one_row(users: Users) -> None:
    for name in ("a", "b"):
        body = {"name": name, "task": ADD, "interval": {"every": 10, "period": "minutes"}}
        assert create(users, {**body, "args": [1, 2]}).status_code == 201
    assert IntervalSchedule.objects.count() == 1


def test_a_clocked_task(users: Users) -> None:
    when = dt.datetime(2030, 1, 1, 8, 0, tzinfo=dt.UTC)
    body = {"name": "once", "task": RECORD, "clocked": {"clocked_time": when.isoformat()}}
    response = create(users, body)
    assert response.status_code == 201, response.json()
    assert ClockedSchedule.objects.get().clocked_time == when


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"crontab": None}, "crontab"),  # no schedule at all
        ({"interval": {"every": 1, "period": "hours"}}, "interval"),  # two schedules
        ({"crontab": {"minute": "61"}}, "crontab"),
        ({"crontab": {"day_of_month": "31", "month_of_year": "2"}}, "crontab"),
        ({"crontab": {"timezone": "Mars/Olympus"}}, "crontab"),
        ({"interval": None, "crontab": None, "clocked": None}, "interval"),
        ({"task": "no.such.task"}, "task"),
        ({"args": [1]}, "non_field_errors"),  # add(x, y) needs two
        ({"kwargs": {"z": 1}}, "non_field_errors"),
        ({"args": {"x": 1}}, "args"),
        ({"priority": 10}, "priority"),
        ({"queue": "bad queue!"}, "queue"),
        ({"misfire_policy": "sometimes"}, "misfire_policy"),
        ({"args": ["\x00", 1]}, "args"),  # PostgreSQL cannot store it
        ({"kwargs": {"\x00": 1}}, "kwargs"),
        ({"headers": {"h": ["\x00"]}}, "headers"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(
    users: Users, changes: dict[str, Any], field: str
) -> None:
    response = create(users, {**NIGHTLY, **changes})
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not PeriodicTask.objects.exists()
    assert not CrontabSchedule.objects.exists() and not IntervalSchedule.objects.exists()


def test_a_crontab_error_names_the_cron_field(users: Users) -> None:
    response = create(users, {**NIGHTLY, "crontab": {"minute": "61", "hour": "25"}})
    assert set(response.json()["crontab"]) == {"minute", "hour"}


def test_a_bound_tasks_signature_leaves_out_self(users: Users) -> None:
    body = {"name": "r", "task": RECORD, "interval": {"every": 5, "period": "seconds"}}
    assert create(users, {**body, "kwargs": {"label": "x"}}).status_code == 201
    assert create(users, {**body, "name": "s", "args": ["x", "y"]}).status_code == 400


def test_the_name_is_unique(users: Users) -> None:
    assert create(users, NIGHTLY).status_code == 201
    response = create(users, NIGHTLY)
    assert response.status_code == 400 and "name" in response.json()


def test_patch_changes_fields_and_a_new_schedule_replaces_the_old(users: Users) -> None:
    pk = create(users, NIGHTLY).json()["id"]
    response = call(
        users,
        "patch",
        f"periodic-tasks/{pk}/",
        {"interval": {"every": 2, "period": "hours"}, "enabled": False, "kwargs": {}},
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["interval"] == {"every": 2, "period": "hours"} and body["crontab"] is None
    assert body["enabled"] is False and body["next_run"] is None
    row = PeriodicTask.objects.get(pk=pk)
    assert row.crontab_id is None and row.interval is not None and not row.enabled


def test_a_schedule_in_a_patch_is_given_whole(users: Users) -> None:
    pk = create(users, NIGHTLY).json()["id"]
    response = call(users, "patch", f"periodic-tasks/{pk}/", {"interval": {"every": 5}})
    assert response.status_code == 400
    assert response.json() == {"interval": {"period": ["This field is required."]}}
    changed = call(users, "patch", f"periodic-tasks/{pk}/", {"crontab": {"minute": "5"}})
    assert changed.json()["crontab"]["hour"] == "*"  # a whole new crontab, not an edit of 3 AM
    assert CrontabSchedule.objects.count() == 2  # the first is left as it was, for others


def test_patch_is_validated_against_the_stored_row(users: Users) -> None:
    pk = create(users, NIGHTLY).json()["id"]
    response = call(users, "patch", f"periodic-tasks/{pk}/", {"args": [1, 2, 3]})
    assert response.status_code == 400 and "non_field_errors" in response.json()
    assert PeriodicTask.objects.get(pk=pk).args == [1, 2]


def test_delete(users: Users) -> None:
    pk = create(users, NIGHTLY).json()["id"]
    response = call(users, "delete", f"periodic-tasks/{pk}/")
    assert response.status_code == 204
    assert not PeriodicTask.objects.exists()
    assert call(users, "get", f"periodic-tasks/{pk}/").status_code == 404


def test_code_declared_tasks_may_only_be_paused(users: Users) -> None:
    pk = create(users, NIGHTLY).json()["id"]
    PeriodicTask.objects.filter(pk=pk).update(code_managed=True)
    refused = call(users, "patch", f"periodic-tasks/{pk}/", {"args": [3, 4], "enabled": False})
    assert refused.status_code == 400 and list(refused.json()) == ["args"]
    paused = call(users, "patch", f"periodic-tasks/{pk}/", {"enabled": False})
    assert paused.status_code == 200 and paused.json()["code_managed"] is True
    deleted = call(users, "delete", f"periodic-tasks/{pk}/")
    assert deleted.status_code == 409 and deleted.json()["code"] == "conflict"
    row = PeriodicTask.objects.get(pk=pk)
    assert row.args == [1, 2] and not row.enabled


def test_run_now_sends_one_run_and_records_it(users: Users, tq_capture: CapturedQueue) -> None:
    body = {**NIGHTLY, "queue": "mail", "kwargs": {}, "headers": {"source": XSS}}
    pk = create(users, body).json()["id"]
    response = call(users, "post", f"periodic-tasks/{pk}/run/", {})
    assert response.status_code == 202, response.json()
    answer = response.json()
    (message,) = tq_capture.messages
    assert (message.id, message.task, message.args, message.queue) == (
        answer["task_id"],
        ADD,
        (1, 2),
        "mail",
    )
    assert message.headers["periodic_task"] == "nightly"
    assert answer["url"].endswith(f"/api/tq/results/{message.id}/")
    run = PeriodicTaskRun.objects.get(task_id=message.id)
    assert run.claimed_by == "api: root" and run.sent_at is not None
    row = PeriodicTask.objects.get(pk=pk)
    assert row.total_run_count == 1 and row.last_run_at is None  # the schedule is unchanged
    tq_capture.run_all()
    assert TaskResult.objects.get(task_id=message.id).result == 3


def test_list_filters_orders_and_pages(users: Users) -> None:
    for number in range(5):
        body = {**NIGHTLY, "name": f"job-{number}", "enabled": number % 2 == 0}
        assert create(users, body).status_code == 201
    first = call(users, "get", "periodic-tasks/?page_size=2").json()
    assert [row["name"] for row in first["results"]] == ["job-0", "job-1"]
    second = users.client("superuser").get(first["next"]).json()
    assert [row["name"] for row in second["results"]] == ["job-2", "job-3"]
    enabled = call(users, "get", "periodic-tasks/?enabled=true&ordering=-name").json()
    assert [row["name"] for row in enabled["results"]] == ["job-4", "job-2", "job-0"]
    assert call(users, "get", "periodic-tasks/?ordering=args").status_code == 400
    assert call(users, "get", "periodic-tasks/?secret=1").status_code == 400


def test_permissions_follow_the_method(users: Users, django_user_model: Any) -> None:
    from tests.api.conftest import permission

    pk = create(users, NIGHTLY).json()["id"]
    clerk = django_user_model.objects.create_user("clerk", password=None, is_staff=True)
    clerk.user_permissions.add(permission("periodictask", "view_periodictask"))
    client = users.client("anonymous")
    client.force_login(clerk)
    assert client.get(API + "periodic-tasks/").status_code == 200
    path = f"{API}periodic-tasks/{pk}/"
    assert client.call("patch", path, {"enabled": False}).status_code == 403
    assert client.call("post", path + "run/", {}).status_code == 403
    assert client.call("delete", path).status_code == 403
    clerk.user_permissions.add(permission("periodictask", "change_periodictask"))
    assert client.call("patch", path, {"enabled": False}).status_code == 200
    assert client.call("delete", path).status_code == 403
    assert client.call("post", API + "periodic-tasks/", {**NIGHTLY, "name": "x"}).status_code == 403


def test_stored_html_is_returned_as_json_strings(users: Users) -> None:
    pk = create(users, {**NIGHTLY, "description": XSS, "name": XSS}).json()["id"]
    response = call(users, "get", f"periodic-tasks/{pk}/")
    assert response["Content-Type"] == "application/json"
    assert response.json()["description"] == XSS
    assert XSS.encode() in response.content  # a JSON string, never HTML


FEEDS = {
    "default": {},
    "feed_tasks": {"exchange": "feeds", "exchange_type": "topic", "routing_key": "feed.#"},
}


def test_an_exchange_and_routing_key_round_trip_and_route_run_now(
    users: Users, tq_capture: CapturedQueue, settings: Any
) -> None:
    settings.TQ = {**settings.TQ, "QUEUES": FEEDS}
    body = {**NIGHTLY, "exchange": "feeds", "routing_key": "feed.import"}
    created = create(users, body)
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    read = call(users, "get", f"periodic-tasks/{pk}/").json()
    assert (read["queue"], read["exchange"], read["routing_key"]) == ("", "feeds", "feed.import")
    patched = call(users, "patch", f"periodic-tasks/{pk}/", {"routing_key": "feed.export"})
    assert patched.json()["routing_key"] == "feed.export"
    assert call(users, "post", f"periodic-tasks/{pk}/run/", {}).status_code == 202
    (message,) = tq_capture.messages
    assert (message.queue, message.exchange, message.routing_key) == (
        "feed_tasks", "feeds", "feed.export",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("routing", "field", "error"),
    [
        ({"exchange": "media", "routing_key": "x"}, "non_field_errors", "'media' is not declared"),
        ({"exchange": "feeds", "routing_key": "orders.new"}, "non_field_errors", "reaches no"),
        ({"exchange": "bad exchange!"}, "exchange", "Use letters, digits"),
        ({"routing_key": "a b"}, "routing_key", "Use letters, digits"),
    ],
)
def test_a_route_that_reaches_no_queue_is_a_400(
    users: Users, settings: Any, routing: dict[str, str], field: str, error: str
) -> None:
    settings.TQ = {**settings.TQ, "QUEUES": FEEDS}
    response = create(users, {**NIGHTLY, **routing})
    assert response.status_code == 400
    assert error in " ".join(response.json()[field]), response.json()
    assert not PeriodicTask.objects.exists()
    pk = create(users, NIGHTLY).json()["id"]  # and in a PATCH, against the stored row
    response = call(users, "patch", f"periodic-tasks/{pk}/", routing)
    assert response.status_code == 400 and field in response.json()
    assert PeriodicTask.objects.get(pk=pk).exchange == ""
