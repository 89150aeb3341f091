"""``results/``: the owner polling use case, filters and ordering allowlists, keyset pages, JSON
that stays JSON, and a constant number of queries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_tq import states
from django_tq.api.pagination import MAX_PAGE_SIZE
from django_tq.models import TaskResult
from tests.api.conftest import ADD, API, XSS, Users, make_result

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]

RESULTS = API + "results/"


def test_owner_polls_their_own_result_until_it_is_ready(users: Users) -> None:
    row = make_result("poll-1", state=states.STARTED, owner=users.user, result=None)
    client = users.client("user")
    first = client.get(RESULTS + "poll-1/").json()
    assert (first["state"], first["ready"], first["result"]) == ("STARTED", False, None)
    assert first["url"] == "http://testserver/api/tq/results/poll-1/"
    assert first["owner"] == {"id": users.user.pk, "username": "alice"}

    TaskResult.objects.filter(pk=row.pk).update(state=states.SUCCESS, result={"total": 3})
    done = client.get(RESULTS + "poll-1/").json()
    assert (done["state"], done["ready"], done["result"]) == ("SUCCESS", True, {"total": 3})


def test_other_users_get_404_for_a_result_they_do_not_own(users: Users) -> None:
    make_result("poll-1", owner=users.user)
    response = users.client("other").get(RESULTS + "poll-1/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_unknown_id_is_404_not_a_fake_pending(users: Users) -> None:
    response = users.client("superuser").get(RESULTS + "never-enqueued/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_ids_holding_slashes_are_listed_and_addressable(users: Users) -> None:
    """Task ids are the caller's strings (``task_id=``, foreign messages): "/" must not break."""
    make_result("shop/order/7", state=states.FAILURE, owner=users.user)
    client = users.client("user")
    listed = client.get(RESULTS)
    assert listed.status_code == 200
    url = listed.json()["results"][0]["url"]
    assert url == "http://testserver/api/tq/results/shop/order/7/"
    assert client.get(url).json()["task_id"] == "shop/order/7"
    assert client.get(url + "graph/").status_code == 200


def test_stored_script_is_returned_as_a_json_string(users: Users, rows: dict[str, Any]) -> None:
    response = users.client("user").get(RESULTS + "mine-1/")
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["args"] == [XSS, 2]
    assert body["kwargs"] == {"note": XSS}
    assert body["result"]["exc_message"] == XSS
    assert body["meta"] == {"label": XSS}
    assert body["traceback"].endswith(XSS)
    # JSON, not markup: the raw bytes hold the string JSON-encoded, never HTML-escaped
    assert b"&lt;" not in response.content


def test_browsers_asking_for_html_still_get_json(users: Users, rows: dict[str, Any]) -> None:
    response = users.client("user").get(RESULTS + "mine-1/", HTTP_ACCEPT="text/html")
    assert response["Content-Type"] == "application/json"
    assert b"<html" not in response.content.lower()


@pytest.fixture
def many(users: Users) -> list[TaskResult]:
    """Twelve results a minute apart, alternating states, queues and task names."""
    start = timezone.now() - timedelta(hours=1)
    made = []
    for index in range(12):
        row = make_result(
            f"r-{index:02d}",
            state=[states.SUCCESS, states.FAILURE, states.STARTED][index % 3],
            queue=["default", "mail"][index % 2],
            task_name=[ADD, "tests.testapp.tasks.fail"][index % 2],
            group_id="g-1" if index < 4 else None,
            date_done=None if index % 4 == 0 else start + timedelta(minutes=index),
            owner=users.user if index % 2 else None,
        )
        TaskResult.objects.filter(pk=row.pk).update(date_created=start + timedelta(minutes=index))
        made.append(row)
    return made


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["task_id"] for row in response.json()["results"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=FAILURE", ["r-10", "r-07", "r-04", "r-01"]),
        (
            "state=FAILURE&state=STARTED",
            ["r-11", "r-10", "r-08", "r-07", "r-05", "r-04", "r-02", "r-01"],
        ),
        ("queue=mail&state=SUCCESS", ["r-09", "r-03"]),
        (f"task_name={ADD}&group_id=g-1", ["r-02", "r-00"]),
        ("task_id=r-03&task_id=r-05&task_id=nope", ["r-05", "r-03"]),
        ("worker=tq@test&page_size=2", ["r-11", "r-10"]),
    ],
)
def test_filters(users: Users, many: list[TaskResult], query: str, expected: list[str]) -> None:
    assert ids(users.client("superuser").get(f"{RESULTS}?{query}")) == expected


def test_date_filters(users: Users, many: list[TaskResult]) -> None:
    low = TaskResult.objects.get(task_id="r-03").date_created
    high = TaskResult.objects.get(task_id="r-05").date_created
    query = {"date_created__gte": low.isoformat(), "date_created__lte": high.isoformat()}
    assert ids(users.client("superuser").get(RESULTS, query)) == ["r-05", "r-04", "r-03"]


def test_filters_stay_inside_the_owners_scope(users: Users, many: list[TaskResult]) -> None:
    assert ids(users.client("user").get(RESULTS + "?queue=default")) == []
    assert ids(users.client("user").get(RESULTS + "?queue=mail&state=SUCCESS")) == ["r-09", "r-03"]


@pytest.mark.parametrize(
    "query",
    [
        "owner__password=x",  # no lookups through relations
        "task_name__regex=.*",  # no lookups the allowlist does not name
        "args__contains=1",
        "search=x",
        "ordering=owner__password",
        "ordering=args",
        "ordering=date_created,task_id",
        "ordering=?",
        "date_created__gte=yesterday",
        "page_size=0",
        "page_size=many",
        "cursor=not-a-cursor",
        "state=",
        "group_id=a%00b",
    ],
)
def test_anything_outside_the_allowlists_is_a_json_400(
    users: Users, many: list[TaskResult], query: str
) -> None:
    response = users.client("superuser").get(f"{RESULTS}?{query}")
    assert response.status_code == 400, response.content
    body = response.json()
    assert isinstance(body, dict) and body
    text = response.content.decode().lower()
    assert "sql" not in text and "select" not in text and "traceback" not in text


def test_unknown_parameters_are_named_in_the_error(users: Users) -> None:
    response = users.client("superuser").get(RESULTS + "?colour=red&state=SUCCESS&size=3")
    assert response.json() == {
        "colour": ["Unknown query parameter."],
        "size": ["Unknown query parameter."],
    }


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("date_created", [f"r-{i:02d}" for i in range(12)]),
        ("-date_created", [f"r-{i:02d}" for i in reversed(range(12))]),
        # NULL date_done (r-00, r-04, r-08) come last in either direction
        (
            "date_done",
            [
                "r-01",
                "r-02",
                "r-03",
                "r-05",
                "r-06",
                "r-07",
                "r-09",
                "r-10",
                "r-11",
                "r-00",
                "r-04",
                "r-08",
            ],
        ),
        (
            "-date_done",
            [
                "r-11",
                "r-10",
                "r-09",
                "r-07",
                "r-06",
                "r-05",
                "r-03",
                "r-02",
                "r-01",
                "r-08",
                "r-04",
                "r-00",
            ],
        ),
        (
            "state",
            [
                "r-01",
                "r-04",
                "r-07",
                "r-10",
                "r-02",
                "r-05",
                "r-08",
                "r-11",
                "r-00",
                "r-03",
                "r-06",
                "r-09",
            ],
        ),
    ],
)
def test_keyset_pages_walk_every_row_once_both_ways(
    users: Users, many: list[TaskResult], ordering: str, expected: list[str]
) -> None:
    client = users.client("superuser")
    seen: list[str] = []
    pages: list[str] = []
    url: str | None = f"{RESULTS}?ordering={ordering}&page_size=5"
    while url:
        pages.append(url)
        response = client.get(url)
        seen += ids(response)
        url = response.json()["next"]
    assert seen == expected
    assert len(pages) == 3
    # and back again from the last page
    last = client.get(pages[-1]).json()
    backwards: list[str] = []
    url = last["previous"]
    while url:
        response = client.get(url)
        backwards = ids(response) + backwards
        url = response.json()["previous"]
    assert backwards + [row["task_id"] for row in last["results"]] == expected


def test_first_page_has_no_previous_and_last_page_no_next(
    users: Users, many: list[TaskResult]
) -> None:
    first = users.client("superuser").get(RESULTS + "?page_size=12").json()
    assert (first["previous"], first["next"], len(first["results"])) == (None, None, 12)


def test_a_cursor_is_bound_to_its_ordering(users: Users, many: list[TaskResult]) -> None:
    client = users.client("superuser")
    next_url = client.get(RESULTS + "?ordering=state&page_size=2").json()["next"]
    cursor = next_url.split("cursor=")[1].split("&")[0]
    response = client.get(f"{RESULTS}?ordering=task_name&cursor={cursor}")
    assert response.status_code == 400
    assert response.json() == {"cursor": ["Invalid cursor."]}


def test_page_size_is_capped(users: Users) -> None:
    TaskResult.objects.bulk_create(
        TaskResult(task_id=f"bulk-{index}", task_name=ADD) for index in range(MAX_PAGE_SIZE + 20)
    )
    client = users.client("superuser")
    assert len(ids(client.get(RESULTS + "?page_size=100000"))) == MAX_PAGE_SIZE
    assert len(ids(client.get(RESULTS))) == 50


@pytest.mark.parametrize("role", ["user", "superuser", "staff_with_perms"])
def test_list_and_detail_queries_do_not_grow_with_rows(users: Users, role: str) -> None:
    client = users.client(role)
    owner = getattr(users, role)

    def count(path: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        return len(captured)

    make_result("first", owner=owner)
    few = count(RESULTS)
    for index in range(30):
        make_result(f"more-{index}", owner=owner if index % 2 else users.other)
    assert count(RESULTS) == few
    assert count(RESULTS + "first/") <= few
    listed = client.get(RESULTS).json()["results"]
    assert any(row["owner"] and row["owner"]["username"] for row in listed)


def test_ids_holding_any_character_are_addressable(users: Users) -> None:
    for task_id in ("line\nbreak", "tab\there", "%2F and ?q=1#x", "中文"):
        make_result(task_id, owner=users.user)
    client = users.client("user")
    listed = client.get(RESULTS).json()["results"]
    assert len(listed) == 4
    for row in listed:
        assert client.get(row["url"]).json()["task_id"] == row["task_id"]
    response = client.get(API + "groups/line%0Abreak/")  # unknown: a JSON 404, never HTML
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
