"""The dashboard's "now" panel: running tasks by worker, the last failures, refreshed in place."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

import django_tq.admin.now as now_panel
from django_tq import states
from django_tq.models import ControlCommand, TaskResult, WorkerState
from tests.conftest import wait_for
from tests.testapp.tasks import slow_record

DASHBOARD = "/admin/django_tq/dashboard/"
NOW = "/admin/django_tq/dashboard/now/"
XSS = "<script>alert(1)</script>"


def _failure(task_name: str) -> TaskResult:
    return TaskResult.objects.create(
        task_id="failed-1",
        task_name=task_name,
        state=states.FAILURE,
        date_done=timezone.now(),
        result={"exc_type": "builtins.KeyError", "exc_message": XSS, "exc_args": [XSS]},
    )


@pytest.mark.django_version
def test_the_panel_has_its_own_url():
    assert reverse("admin:django_tq_dashboard_now") == NOW


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_the_panel_shows_running_tasks_by_worker_and_failures_escaped(
    admin_client, queue_name, settings, start_worker
):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    start_worker("-n", f"{XSS}@test", "-P", "prefork", "-c", "1")
    running = slow_record.delay(10, XSS)
    failed = _failure(f"shop.{XSS}")
    wait_for(lambda: TaskResult.objects.filter(task_id=running.id, state=states.STARTED).exists())

    for url in (DASHBOARD, NOW):
        html = admin_client.get(url).content.decode()
        panel = html[html.index("Running by worker") :]
        assert XSS not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;@test" in panel  # the worker's name
        assert running.id in panel and "tests.testapp.tasks.slow_record" in panel
        assert f"?task_id={running.id}" in panel  # links to its result
        assert "&#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;" in panel  # its arguments
        assert "1 task running" in html
        assert reverse("admin:django_tq_taskresult_change", args=[failed.pk]) in panel
        assert "shop.&lt;script&gt;" in panel and "KeyError" in panel


@pytest.mark.django_version
@pytest.mark.django_db
def test_the_dashboard_refreshes_the_panel_in_place_and_without_script_the_page(admin_client):
    html = admin_client.get(DASHBOARD).content.decode()
    section = re.search(
        r'<section class="tq-now" id="tq-now" data-url="([^"]+)" data-refresh="(\d+)"', html
    )
    assert section is not None and section.groups() == (NOW, str(now_panel.REFRESH_SECONDS))
    assert (
        f'<noscript><meta http-equiv="refresh" content="{now_panel.REFRESH_SECONDS}"></noscript>'
        in html
    )
    script = html[html.rindex("<script") : html.rindex("</script>")]
    assert "panel.dataset.url" in script and "X-TQ-Panel" in script and "document.hidden" in script
    assert "src=" not in script  # inline, nothing loaded from elsewhere
    assert html.count("setInterval(refresh") == 1  # one timer

    response = admin_client.get(NOW)
    assert response.status_code == 200 and response[now_panel.PANEL_HEADER] == "now"
    assert "no-store" in response["Cache-Control"]  # the admin's never_cache
    body = response.content.decode()
    assert "<html" not in body and "Running by worker" in body and "No worker alive." in body


@pytest.mark.django_version
@pytest.mark.django_db
def test_the_panel_needs_the_dashboards_permission(client, django_user_model: Any):
    anonymous = client.get(NOW)
    assert anonymous.status_code == 302 and now_panel.PANEL_HEADER not in anonymous
    user = django_user_model.objects.create_user("staff", password="x", is_staff=True)
    client.force_login(user)
    assert client.get(NOW).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    assert client.get(NOW).status_code == 200


@pytest.mark.db
@pytest.mark.django_db
def test_a_worker_that_does_not_answer_is_shown_so_within_a_second(admin_client):
    now = timezone.now()
    WorkerState.objects.create(
        hostname="silent@test", pid=1, pool="prefork", concurrency=4, started_at=now,
        last_heartbeat=now,
    )  # fmt: skip
    started = time.monotonic()
    body = admin_client.get(NOW).content.decode()
    assert time.monotonic() - started < now_panel.ACTIVE_TIMEOUT + 1
    assert "silent@test" in body and "no reply within a second" in body and "4 consumers" in body


@pytest.mark.db
@pytest.mark.django_db
def test_without_live_workers_no_command_is_sent(admin_client):
    now = timezone.now()
    WorkerState.objects.create(
        hostname="stopped@test", pid=1, pool="solo", concurrency=1, started_at=now,
        last_heartbeat=now, stopped_at=now,
    )  # fmt: skip
    assert "No worker alive." in admin_client.get(NOW).content.decode()
    assert not ControlCommand.objects.exists()
