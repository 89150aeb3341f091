"""The tree of a workflow, read from the result rows' parent, root and group ids (admin, REST)."""

from __future__ import annotations

from typing import Any

from django_tq import states
from django_tq.models import GroupResult, TaskResult


def workflow_graph(task_id: str) -> dict[str, Any] | None:
    """Return the tree of the workflow ``task_id`` belongs to, from its root (None: unknown id).

    Each node is ``{"id", "type": "task" | "group", "name", "state", "children"}``; a group
    node's children are its members, then what ran after the group (a chord's body). Needs the
    ``django-db`` result backend (the tree is read from ``TaskResult`` rows).
    """
    row = TaskResult.objects.filter(task_id=task_id).values("root_id").first()
    if row is None:
        return None
    root_id = row["root_id"] or task_id
    fields = ("task_id", "task_name", "state", "parent_id", "group_id", "date_created")
    rows = list(
        TaskResult.objects.filter(root_id=root_id).order_by("date_created", "id").values(*fields)
    )
    if not any(r["task_id"] == root_id for r in rows):
        rows[:0] = TaskResult.objects.filter(task_id=root_id).values(*fields)
    groups = {
        g.group_id: g
        for g in GroupResult.objects.filter(group_id__in={r["group_id"] for r in rows})
    }
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    seen: set[str] = set()  # each row once, whatever its ids say (a row may share a group's id)
    for r in rows:
        by_parent.setdefault(r["parent_id"], []).append(r)

    def group_node(group_id: str, members: list[dict[str, Any]]) -> dict[str, Any]:
        stored = groups.get(group_id)
        order = {i: n for n, i in enumerate(stored.result_ids if stored else [])}
        members = sorted(members, key=lambda r: order.get(r["task_id"], len(order)))
        members = [m for m in members if m["task_id"] not in seen]
        children = [task_node(m) for m in members]
        children += nodes(group_id, None)
        member_states = {m["state"] for m in members}
        state = (
            states.SUCCESS
            if member_states == {states.SUCCESS}
            else (
                states.FAILURE if member_states & {states.FAILURE, states.DEAD} else states.STARTED
            )
        )
        name = "chord" if stored and stored.is_chord else "group"
        return {"id": group_id, "type": "group", "name": name, "state": state, "children": children}

    def nodes(parent_id: str | None, group_id: str | None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        grouped: dict[str, list[dict[str, Any]]] = {}
        for r in by_parent.get(parent_id, []):
            if r["task_id"] in seen:
                continue
            if r["group_id"] and r["group_id"] != group_id:
                grouped.setdefault(r["group_id"], []).append(r)
            else:
                found.append(task_node(r))
        return found + [group_node(g, members) for g, members in grouped.items()]

    def task_node(r: dict[str, Any]) -> dict[str, Any]:
        seen.add(r["task_id"])
        children = nodes(r["task_id"], r["group_id"])
        return {
            "id": r["task_id"],
            "type": "task",
            "name": r["task_name"],
            "state": r["state"],
            "children": children,
        }

    top = [r for r in rows if r["task_id"] == root_id] or rows[:1]
    if not top:
        return None
    if top[0]["group_id"] and not top[0]["parent_id"]:  # a group applied on its own
        return group_node(top[0]["group_id"], by_parent.get(None, []))
    tree = task_node(top[0])
    # Rows of the workflow whose parent is not in it (a task that replaced itself with a chord
    # gives the chord's header its own parent, none for a root) go under the root, never lost.
    ids = {r["task_id"] for r in rows}
    for parent_id in [p for p in by_parent if p is None or p not in ids]:
        tree["children"] += nodes(parent_id, None)
    return tree
