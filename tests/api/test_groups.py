"""``groups/``, ``groups/{id}/`` and ``results/{id}/graph/``: workflows over the API."""

from __future__ import annotations

from typing import Any

import pytest

from django_tq import chain, group, states
from django_tq.testing import capture
from tests.api.conftest import API, Users
from tests.testapp.tasks import add, mul, tsum

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]


def test_group_detail_lists_members_in_order_with_counts(
    users: Users, rows: dict[str, Any]
) -> None:
    response = users.client("user").get(API + "groups/group-mine/")
    assert response.status_code == 200
    body = response.json()
    assert [m["task_id"] for m in body["members"]] == ["mine-1", "never-recorded"]
    assert [m["state"] for m in body["members"]] == [states.FAILURE, states.PENDING]
    assert body["counts"] == {states.FAILURE: 1, states.PENDING: 1}
    assert body["completed_count"] == 0 and body["ready"] is False and body["size"] == 2


def test_group_list_is_scoped_to_the_owner(users: Users, rows: dict[str, Any]) -> None:
    mine = users.client("user").get(API + "groups/").json()["results"]
    assert [g["group_id"] for g in mine] == ["group-mine"]
    assert users.client("other").get(API + "groups/").json()["results"] == []
    every = users.client("staff_with_perms").get(API + "groups/?ordering=date_created")
    assert [g["group_id"] for g in every.json()["results"]] == ["group-mine", "group-unowned"]


def test_a_workflow_applied_by_a_user_is_theirs_and_its_graph_is_served(users: Users) -> None:
    with capture() as queue:
        result = chain(add.s(1, 1), group(add.s(1), mul.s(2)), tsum.s()).apply_async(
            owner=users.user
        )
        queue.run_all()
    assert result.get(timeout=5) == 3 + 4
    root = result.parent.parent.id
    groups = users.client("user").get(API + "groups/").json()["results"]
    assert [(g["group_id"], g["is_chord"], g["size"]) for g in groups] == [
        (result.parent.id, True, 2)
    ]
    tree = users.client("user").get(API + f"results/{root}/graph/").json()
    assert (tree["id"], tree["type"], tree["state"]) == (root, "task", states.SUCCESS)
    [chord_node] = tree["children"]
    assert chord_node["type"] == "group" and chord_node["name"] == "chord"
    names = [child["name"].rsplit(".", 1)[-1] for child in chord_node["children"]]
    assert names == ["add", "mul", "tsum"]
    assert users.client("other").get(API + f"results/{root}/graph/").status_code == 404
