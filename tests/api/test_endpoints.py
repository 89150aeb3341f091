"""Dead letters, registered tasks, workers and queues as staff see them."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_tq.models import DeadLetter, QueueMessage
from tests.api.conftest import ADD, API, XSS, Users

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]


def get(users: Users, path: str) -> Any:
    response = users.client("staff_with_perms").get(API + path)
    assert response.status_code == 200, response.content
    return response.json()


def test_dead_letters_list_and_detail(users: Users, rows: dict[str, Any]) -> None:
    letter = rows["letter"]
    listed = get(users, "dead-letters/")
    (row,) = listed["results"]
    assert row["reason"] == f"unknown task: {XSS}"
    assert "payload" not in row and "headers" not in row
    detail = get(users, f"dead-letters/{letter.pk}/")
    assert (detail["payload"], detail["headers"]) == (XSS, {"task": XSS})
    assert row["url"].endswith(f"/api/tq/dead-letters/{letter.pk}/")


def test_dead_letters_filter_and_page(users: Users, rows: dict[str, Any]) -> None:
    for index in range(5):
        DeadLetter.objects.create(task_name="other.task", queue="io", reason=f"r{index}")
    page = get(users, "dead-letters/?queue=io&page_size=2&ordering=created_at")
    assert [row["reason"] for row in page["results"]] == ["r0", "r1"]
    assert page["next"] and page["previous"] is None
    assert get(users, "dead-letters/?task_name=missing.task")["results"][0]["queue"] == "default"
    response = users.client("staff_with_perms").get(API + "dead-letters/?reason=x")
    assert response.status_code == 400


def test_registered_tasks_with_their_options(
    users: Users, allow_enqueue: None, rows: dict[str, Any]
) -> None:
    tasks = {task["name"]: task for task in get(users, "tasks/")}
    assert tasks[ADD] == {
        "name": ADD,
        "queue": None,
        "priority": None,
        "max_retries": 3,
        "acks_late": True,
        "ignore_result": False,
        "bind": False,
        "enqueue_allowed": True,
    }
    assert tasks["tests.testapp.tasks.who_am_i"]["bind"] is True
    assert tasks["tests.testapp.tasks.who_am_i"]["enqueue_allowed"] is False


def test_workers_are_alive_or_lost(users: Users, rows: dict[str, Any]) -> None:
    workers = {worker["hostname"]: worker for worker in get(users, "workers/")}
    assert workers["tq@alive"]["alive"] is True
    assert workers["tq@alive"]["queues"] == ["default", "mail"]
    assert workers["tq@lost"]["alive"] is False


def test_queues_show_depth_and_live_consumers_in_constant_queries(
    users: Users, rows: dict[str, Any]
) -> None:
    client = users.client("staff_with_perms")
    with CaptureQueriesContext(connection) as few:
        first = client.get(API + "queues/").json()
    assert {queue["name"]: (queue["depth"], queue["workers"]) for queue in first} == {
        "default": (0, 1),  # the live worker consumes it; the lost one does not count
        "mail": (1, 1),
    }
    for index in range(20):
        QueueMessage.objects.create(
            queue=f"q{index % 4}",
            payload="{}",
            not_before=rows["message"].not_before,
            created_at=rows["message"].created_at,
        )
    with CaptureQueriesContext(connection) as more:
        second = client.get(API + "queues/").json()
    assert len(more) == len(few)
    assert {queue["name"]: queue["depth"] for queue in second}["q3"] == 5
