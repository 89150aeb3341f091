"""``schema/``: a valid OpenAPI 3 document of exactly this API; schemathesis finds no 5xx in it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from django_tq.api import schema as api_schema
from django_tq.models import DeadLetter, GroupResult, IntervalSchedule, PeriodicTask
from tests.api.conftest import ADD, API, Users, make_result

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]
needs_spectacular = pytest.mark.skipif(
    not api_schema.IS_AVAILABLE, reason="drf-spectacular (the openapi extra) is not installed"
)
ROOT = Path(__file__).resolve().parents[2]

OPERATIONS = {
    ("/api/tq/results/", "get"),
    ("/api/tq/results/{task_id}/", "get"),
    ("/api/tq/results/{task_id}/retry/", "post"),
    ("/api/tq/results/{task_id}/revoke/", "post"),
    ("/api/tq/results/{task_id}/graph/", "get"),
    ("/api/tq/groups/", "get"),
    ("/api/tq/groups/{group_id}/", "get"),
    ("/api/tq/dead-letters/", "get"),
    ("/api/tq/dead-letters/{id}/", "get"),
    ("/api/tq/tasks/", "get"),
    ("/api/tq/tasks/{name}/enqueue/", "post"),
    ("/api/tq/workers/", "get"),
    ("/api/tq/queues/", "get"),
    ("/api/tq/periodic-tasks/", "get"),
    ("/api/tq/periodic-tasks/", "post"),
    ("/api/tq/periodic-tasks/{id}/", "get"),
    ("/api/tq/periodic-tasks/{id}/", "patch"),
    ("/api/tq/periodic-tasks/{id}/", "delete"),
    ("/api/tq/periodic-tasks/{id}/run/", "post"),
}


@pytest.fixture
def document(users: Users) -> dict[str, Any]:
    response = users.client("user").get(API + "schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return dict(response.json())


@needs_spectacular
def test_schema_is_valid_openapi_3_describing_every_endpoint(document: dict[str, Any]) -> None:
    from drf_spectacular.validation import validate_schema

    validate_schema(document)  # raises on an invalid document
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "django_tq API"
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert operations == OPERATIONS  # only this API, wherever it is mounted
    results = document["paths"]["/api/tq/results/"]["get"]
    names = {parameter["name"] for parameter in results["parameters"]}
    assert {"state", "task_name", "queue", "worker", "group_id", "root_id"} <= names
    assert {"date_created__gte", "date_created__lte", "ordering", "cursor", "page_size"} <= names
    ordering = next(p for p in results["parameters"] if p["name"] == "ordering")
    assert "-date_created" in ordering["schema"]["enum"]
    assert "args" not in ordering["schema"]["enum"]


@needs_spectacular
def test_schema_needs_a_signed_in_user(users: Users) -> None:
    response = users.client("anonymous").get(API + "schema/")
    assert response.status_code in (401, 403)


@pytest.fixture
def wsgi_app() -> Iterator[Any]:
    """Django's WSGI application, on the test's own (transaction-wrapped) connection.

    As Django's test client does, connections are not closed at the end of each request: that
    would end the test's transaction.
    """
    from django.core.wsgi import get_wsgi_application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@needs_spectacular
def test_schemathesis_finds_no_server_error(
    document: dict[str, Any], wsgi_app: Any, users: Users, settings: Any, allow_enqueue: None
) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, strategies
    from hypothesis import settings as hypothesis_settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    users.superuser.set_password("fuzz")
    users.superuser.save()
    make_result("known-1", owner=users.user, state="FAILURE")
    token = base64.b64encode(b"root:fuzz").decode()
    headers = {"Authorization": f"Basic {token}"}
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]

    letter = DeadLetter.objects.create(task_name="missing.task", reason="unknown task")
    GroupResult.objects.create(group_id="group-1", result_ids=["known-1"], owner=users.user)
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    job = PeriodicTask.objects.create(name="hourly", task=ADD, interval=every, args=[1, 2])
    known = {"task_id": "known-1", "name": ADD, "id": letter.pk, "group_id": "group-1"}

    def with_known_path(case: Any) -> Any:
        for name in case.path_parameters or {}:
            case.path_parameters[name] = known[name]
            if name == "id" and case.path.startswith("/api/tq/periodic-tasks/"):
                case.path_parameters[name] = job.pk
        return case

    schema = schemathesis.openapi.from_dict(document)
    schema.app = wsgi_app
    failures: list[str] = []
    for found in schema.get_all_operations():
        operation = found.ok()
        generated = operation.as_strategy()

        @given(case=strategies.one_of(generated, generated.map(with_known_path)))
        @hypothesis_settings(
            max_examples=30,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=checks, headers=headers)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then fail once
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


WITHOUT_SPECTACULAR = """
import json, sys
sys.modules["drf_spectacular"] = None  # as if the openapi extra were not installed
import django
django.setup()
from django.test import Client
from django.urls import get_resolver
names = [p.name for p in get_resolver("django_tq.api.urls").url_patterns]
client = Client()
print(json.dumps({"names": names, "schema": client.get("/api/tq/schema/").status_code,
                  "results": client.get("/api/tq/results/").status_code}))
"""


def test_without_drf_spectacular_there_is_no_schema_route_and_the_rest_works() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SPECTACULAR],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "schema" not in seen["names"] and "result-list" in seen["names"]
    assert seen["schema"] == 404  # the JSON catch-all: the route is not there
    assert seen["results"] in (401, 403)  # the API itself is mounted and guarded
