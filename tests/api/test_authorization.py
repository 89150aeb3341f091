"""The authorization matrix: every endpoint and method, for every kind of account.

No account gets a 2xx it is not entitled to; what is refused is refused with a JSON body; rows a
user may not see are absent (404), not forbidden; anonymous requests get 401/403 everywhere.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from django_tq.api.permissions import ApiAccess
from django_tq.api.views import ApiView
from tests.api.conftest import ADD, API, ROLES, Users

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]

SIGNED_IN = {"user", "other", "staff", "staff_with_perms", "superuser"}
STAFF = {"staff_with_perms", "superuser"}
METHODS = ["get", "head", "options", "post", "put", "patch", "delete"]

#: a periodic task the matrix creates
NEW_JOB = {
    "name": "new",
    "task": ADD,
    "interval": {"every": 5, "period": "minutes"},
    "args": [1, 2],
}

#: (path, the method that does something, its body, the roles it may succeed for)
ENDPOINTS: list[tuple[str, str, Any, set[str]]] = [
    ("results/", "get", None, SIGNED_IN),  # scoped: see test_result_list_is_scoped_to_the_owner
    ("results/mine-1/", "get", None, {"user", *STAFF}),
    ("results/theirs-1/", "get", None, {"other", *STAFF}),
    ("results/unowned-1/", "get", None, STAFF),
    ("results/mine-1/retry/", "post", {}, STAFF),
    ("results/unowned-1/retry/", "post", {"queue": "elsewhere"}, STAFF),
    ("results/mine-1/revoke/", "post", {}, STAFF),
    ("results/unowned-1/revoke/", "post", {"terminate": True}, STAFF),
    ("results/mine-1/graph/", "get", None, {"user", *STAFF}),
    ("results/unowned-1/graph/", "get", None, STAFF),
    ("groups/", "get", None, SIGNED_IN),  # scoped like results/
    ("groups/group-mine/", "get", None, {"user", *STAFF}),
    ("groups/group-unowned/", "get", None, STAFF),
    ("dead-letters/", "get", None, STAFF),
    ("dead-letters/{letter}/", "get", None, STAFF),
    ("tasks/", "get", None, STAFF),
    (f"tasks/{ADD}/enqueue/", "post", {"args": [1, 2]}, {"user", *STAFF}),
    ("workers/", "get", None, STAFF),
    ("queues/", "get", None, STAFF),
    ("periodic-tasks/", "get", None, STAFF),
    ("periodic-tasks/", "post", NEW_JOB, STAFF),
    ("periodic-tasks/{job}/", "get", None, STAFF),
    ("periodic-tasks/{job}/", "patch", {"enabled": False}, STAFF),
    ("periodic-tasks/{job}/run/", "post", {}, STAFF),
    ("periodic-tasks/{doomed}/", "delete", None, STAFF),
    ("schema/", "get", None, SIGNED_IN),
]


def _route(template: str) -> str:
    return re.sub(r"\{\w+\}", "{}", template)


@pytest.mark.parametrize("role", ROLES)
def test_no_unauthorised_2xx_on_any_endpoint_or_method(
    role: str, users: Users, rows: dict[str, Any], allow_enqueue: None
) -> None:
    client = users.client(role)
    wrong: list[str] = []
    for template, allowed_method, body, allowed_roles in ENDPOINTS:
        path = API + template.format(
            letter=rows["letter"].pk, job=rows["job"].pk, doomed=rows["doomed"].pk
        )
        # a route listed for several methods: the others are checked on their own line
        listed = {entry[1] for entry in ENDPOINTS if _route(entry[0]) == _route(template)}
        listed.discard(allowed_method)
        for method in METHODS:
            if method in listed or (method == "head" and "get" in listed):
                continue
            response = client.call(method, path, body)
            same = method == allowed_method or (method, allowed_method) == ("head", "get")
            entitled = same and role in allowed_roles
            ok = 200 <= response.status_code < 300
            if role == "anonymous":
                expected = response.status_code in (401, 403)
            elif entitled:
                expected = ok
            else:
                expected = response.status_code in (403, 404, 405)
            if not expected:
                wrong.append(f"{method.upper()} {path}: {response.status_code}")
            if not ok and method != "head":
                assert response["Content-Type"].endswith("json"), (method, path)
                assert isinstance(response.json(), dict)
    assert not wrong, f"{role}: " + "; ".join(wrong)


@pytest.mark.parametrize(
    ("role", "visible"),
    [
        ("user", {"mine-1"}),
        ("other", {"theirs-1"}),
        ("staff", set()),
        ("staff_with_perms", {"mine-1", "theirs-1", "unowned-1"}),
        ("superuser", {"mine-1", "theirs-1", "unowned-1"}),
    ],
)
def test_result_list_is_scoped_to_the_owner(
    role: str, visible: set[str], users: Users, rows: dict[str, Any]
) -> None:
    response = users.client(role).get(API + "results/")
    assert response.status_code == 200
    assert {row["task_id"] for row in response.json()["results"]} == visible


def test_staff_without_permissions_see_only_their_own_results(
    users: Users, rows: dict[str, Any]
) -> None:
    from tests.api.conftest import make_result

    make_result("intern-1", owner=users.staff)
    response = users.client("staff").get(API + "results/")
    assert [row["task_id"] for row in response.json()["results"]] == ["intern-1"]
    assert users.client("staff").get(API + "results/mine-1/").status_code == 404


def test_owners_cannot_requeue_their_own_tasks(users: Users, rows: dict[str, Any]) -> None:
    response = users.client("user").call("post", API + "results/mine-1/retry/", {})
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_enqueue_needs_the_permission_even_for_staff(
    users: Users, rows: dict[str, Any], allow_enqueue: None
) -> None:
    response = users.client("staff").call("post", API + f"tasks/{ADD}/enqueue/", {})
    assert response.status_code == 403


def _api_views() -> list[type[ApiView]]:
    found: list[type[ApiView]] = []

    def walk(patterns: list[Any]) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns)
            elif isinstance(pattern, URLPattern):
                view_class = getattr(pattern.callback, "cls", None)
                if isinstance(view_class, type) and issubclass(view_class, ApiView):
                    found.append(view_class)

    walk(get_resolver().url_patterns)
    return found


def test_every_view_names_its_permission_classes() -> None:
    views = _api_views()
    assert len(views) == 16
    for view in views:
        assert "permission_classes" in vars(view) or any(
            "permission_classes" in vars(base) for base in view.__mro__[1:] if base is not ApiView
        ), view
        assert view.permission_classes, view
        assert view.permission_classes[0] is ApiAccess, view
        assert all(cls.__name__ != "AllowAny" for cls in view.permission_classes), view
