"""Errors are JSON whatever goes wrong; API_PERMISSION_CLASSES is read once per settings load."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import got_request_exception
from rest_framework.permissions import BasePermission

from django_tq.api import permissions, queues
from django_tq.api.errors import exception_handler
from django_tq.exceptions import PublishError
from tests.api.conftest import API, JsonClient, Users

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]


@pytest.mark.parametrize("path", ["nothing/", "results/x/y/z/", "", "results/x/unknown/"])
def test_unknown_paths_are_json_404(users: Users, path: str) -> None:
    response = users.client("superuser").get(API + path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_a_path_without_its_slash_is_redirected_not_html(users: Users) -> None:
    response = users.client("superuser").get(API + "results")
    assert response.status_code == 301
    assert response["Location"].endswith("/api/tq/results/")


def test_an_unexpected_error_is_a_json_500_and_is_reported(
    users: Users, monkeypatch: pytest.MonkeyPatch, settings: Any, caplog: Any
) -> None:
    settings.DEBUG = True  # even then: no HTML debug page

    def broken(now: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(queues, "overview", broken)
    reported: list[Any] = []

    def receiver(sender: Any, request: Any, **kwargs: Any) -> None:
        reported.append(request)

    got_request_exception.connect(receiver)
    try:
        with caplog.at_level(logging.ERROR, logger="django_tq.api"):
            client = JsonClient(raise_request_exception=False)  # as a real server would
            client.force_login(users.superuser)
            response = client.get(API + "queues/")
    finally:
        got_request_exception.disconnect(receiver)
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error.", "code": "server_error"}
    assert b"secret internals" not in response.content
    assert "secret internals" in caplog.text
    assert len(reported) == 1


def test_a_broker_that_does_not_answer_is_a_503() -> None:
    response = exception_handler(PublishError("down"), {})
    assert response.status_code == 503
    assert response.data["code"] == "broker_unavailable"


class DenyAll(BasePermission):
    message = "Closed for maintenance."

    def has_permission(self, request: Any, view: Any) -> bool:
        return False


def test_permission_classes_come_from_settings(users: Users, settings: Any) -> None:
    settings.TQ = {
        **settings.TQ,
        "API_PERMISSION_CLASSES": [
            "django_tq.api.permissions.IsStaffOrOwner",
            "tests.api.test_errors_and_settings.DenyAll",
        ],
    }
    response = users.client("superuser").get(API + "results/")
    assert response.status_code == 403
    assert response.json()["detail"] == "Closed for maintenance."


def test_permission_classes_are_resolved_once_per_settings_load(settings: Any) -> None:
    first = permissions.configured_classes()
    assert permissions.configured_classes() is first
    settings.TQ = {
        **settings.TQ,
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    }
    assert [cls.__name__ for cls in permissions.configured_classes()] == ["IsAdminUser"]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "would open the API to everyone"),
        (["no.such.Class"], "cannot import"),
        (["django_tq.api.permissions.SETTING"], "must list permission classes"),
    ],
)
def test_bad_permission_settings_are_named(settings: Any, entries: list[str], message: str) -> None:
    settings.TQ = {**settings.TQ, "API_PERMISSION_CLASSES": entries}
    with pytest.raises(ImproperlyConfigured, match=message):
        permissions.configured_classes()
