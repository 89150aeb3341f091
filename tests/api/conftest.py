"""Fixtures for the REST API tests: one user of every kind, a row of every kind, JSON clients."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.utils import timezone

from django_tq import states
from django_tq.models import (
    DeadLetter,
    GroupResult,
    IntervalSchedule,
    PeriodicTask,
    QueueMessage,
    TaskResult,
    WorkerState,
)

API = "/api/tq/"
XSS = "<script>alert(1)</script>"
ADD = "tests.testapp.tasks.add"

#: what the staff user with permissions holds (``enqueue_task`` is created by the fixture until a
#: model declares it in ``Meta.permissions``)
STAFF_PERMISSIONS = [
    ("taskresult", "view_taskresult"),
    ("taskresult", "change_taskresult"),
    ("taskresult", "enqueue_task"),
    ("deadletter", "view_deadletter"),
    ("groupresult", "view_groupresult"),
    ("workerstate", "view_workerstate"),
    ("queuemessage", "view_queuemessage"),
    ("periodictask", "view_periodictask"),
    ("periodictask", "add_periodictask"),
    ("periodictask", "change_periodictask"),
    ("periodictask", "delete_periodictask"),
]


def permission(model: str, codename: str) -> Permission:
    """Return django_tq's permission ``codename`` (created when no model declares it yet)."""
    content_type = ContentType.objects.get(app_label="django_tq", model=model)
    found, _ = Permission.objects.get_or_create(
        content_type=content_type, codename=codename, defaults={"name": codename}
    )
    return found


class JsonClient(Client):
    """A test client that sends JSON bodies and decodes JSON answers."""

    def call(self, method: str, path: str, body: Any = None, **extra: Any) -> Any:
        """Send ``body`` as JSON (a ``str`` is sent as is) and return the response."""
        data = body if isinstance(body, str) else json.dumps(body if body is not None else {})
        if method in ("get", "head", "options", "delete"):
            return getattr(self, method)(path, **extra)
        return getattr(self, method)(path, data=data, content_type="application/json", **extra)


@dataclass
class Users:
    """One account of every kind the authorization matrix covers (``None``: anonymous)."""

    anonymous: None
    user: Any
    other: Any
    staff: Any
    staff_with_perms: Any
    superuser: Any

    def client(self, role: str) -> JsonClient:
        """Return a client signed in as ``role`` (not signed in for ``anonymous``)."""
        client = JsonClient()
        account = getattr(self, role)
        if account is not None:
            client.force_login(account)
        return client


ROLES = ["anonymous", "user", "other", "staff", "staff_with_perms", "superuser"]


@pytest.fixture
def users(django_user_model: Any) -> Users:
    """Create the accounts; ``user`` may enqueue (the front-end case), ``other`` may not."""
    create = django_user_model.objects.create_user
    user = create("alice", password=None)
    user.user_permissions.add(permission("taskresult", "enqueue_task"))
    staff_with_perms = create("helpdesk", password=None, is_staff=True)
    staff_with_perms.user_permissions.add(*(permission(*entry) for entry in STAFF_PERMISSIONS))
    return Users(
        anonymous=None,
        user=user,
        other=create("bob", password=None),
        staff=create("intern", password=None, is_staff=True),
        staff_with_perms=staff_with_perms,
        superuser=django_user_model.objects.create_superuser("root", "root@example.com", None),
    )


def make_result(task_id: str, **fields: Any) -> TaskResult:
    """Create a task result row (a finished ``add`` unless ``fields`` say otherwise)."""
    values: dict[str, Any] = {
        "task_name": ADD,
        "state": states.SUCCESS,
        "queue": "default",
        "worker": "tq@test",
        "args": [1, 2],
        "kwargs": {},
        "result": 3,
    }
    values.update(fields)
    return TaskResult.objects.create(task_id=task_id, **values)


@pytest.fixture
def rows(users: Users) -> dict[str, Any]:
    """A result owned by ``user`` (failed, with hostile strings), one by ``other``, one unowned,
    a dead letter, a worker, a waiting message, a group owned by ``user`` and one unowned, and two
    periodic tasks."""
    now = timezone.now()
    every_hour, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    return {
        "job": PeriodicTask.objects.create(
            name="hourly", task=ADD, interval=every_hour, args=[1, 2], description=XSS
        ),
        "doomed": PeriodicTask.objects.create(
            name="to delete", task=ADD, interval=every_hour, args=[1, 2]
        ),
        "mine": make_result(
            "mine-1",
            state=states.FAILURE,
            owner=users.user,
            args=[XSS, 2],
            kwargs={"note": XSS},
            result={"exc_type": "builtins.ValueError", "exc_message": XSS, "exc_args": [XSS]},
            traceback=f"Traceback (most recent call last):\nValueError: {XSS}",
            meta={"label": XSS},
        ),
        "theirs": make_result("theirs-1", owner=users.other),
        "unowned": make_result("unowned-1", state=states.DEAD, task_name="missing.task"),
        "letter": DeadLetter.objects.create(
            task_id="unowned-1",
            task_name="missing.task",
            queue="default",
            reason=f"unknown task: {XSS}",
            content_type="application/json",
            headers={"task": XSS},
            payload=XSS,
        ),
        "worker": WorkerState.objects.create(
            hostname="tq@alive",
            pid=10,
            queues=["default", "mail"],
            pool="prefork",
            concurrency=2,
            started_at=now,
            last_heartbeat=now,
        ),
        "lost": WorkerState.objects.create(
            hostname="tq@lost",
            pid=11,
            queues=["default"],
            pool="threads",
            concurrency=4,
            started_at=now - timedelta(hours=1),
            last_heartbeat=now - timedelta(minutes=10),
        ),
        "message": QueueMessage.objects.create(
            queue="mail", payload="{}", not_before=now, created_at=now
        ),
        "group": GroupResult.objects.create(
            group_id="group-mine", result_ids=["mine-1", "never-recorded"], owner=users.user
        ),
        "unowned_group": GroupResult.objects.create(group_id="group-unowned", result_ids=[]),
    }


@pytest.fixture
def allow_enqueue(settings: Any) -> None:
    """Let the API enqueue ``tests.testapp.tasks.add``."""
    settings.TQ = {**settings.TQ, "API_ENQUEUE_ALLOWLIST": [ADD]}
