"""The periodic task screens: they render, preview the next runs, validate arguments as JSON and
against the task's signature, and their actions enable, disable and run tasks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from django_tq import crontab
from django_tq.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTaskRun,
    SolarSchedule,
)
from django_tq.testing import capture
from tests.beat.conftest import RECORD, make_task

pytestmark = [pytest.mark.django_db, pytest.mark.django_version]

MODELS = [
    "periodictask",
    "periodictaskrun",
    "intervalschedule",
    "crontabschedule",
    "clockedschedule",
    "solarschedule",
]
XSS = "<script>alert(1)</script>"


def admin_url(model: str, view: str = "changelist", *args: Any) -> str:
    return reverse(f"admin:django_tq_{model}_{view}", args=args)


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("admin", "admin@example.com", None)


@pytest.fixture
def rows() -> dict[str, Any]:
    now = timezone.now()
    job = make_task(
        crontab(minute=0, hour=3, timezone="Europe/Paris"),
        name=f"nightly {XSS}",
        created=now - dt.timedelta(days=1),
        kwargs={"label": XSS},
        description=XSS,
    )
    run = PeriodicTaskRun.objects.create(
        periodic_task=job,
        scheduled_for=now - dt.timedelta(hours=1),
        task_id="run-1",
        claimed_at=now,
        claimed_by="beat@test",
        sent_at=now,
    )
    return {
        "periodictask": job,
        "periodictaskrun": run,
        "crontabschedule": job.crontab,
        "intervalschedule": IntervalSchedule.objects.create(every=10, period="seconds"),
        "clockedschedule": ClockedSchedule.objects.create(clocked_time=now + dt.timedelta(days=1)),
        "solarschedule": SolarSchedule.objects.create(
            event="sunset", latitude="59.9139", longitude="10.7522"
        ),
    }


@pytest.mark.parametrize("model", MODELS)
def test_pages_render_escaped(admin_client: Any, rows: dict[str, Any], model: str) -> None:
    for url in (admin_url(model), admin_url(model, "change", rows[model].pk)):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert XSS not in response.content.decode()


@pytest.mark.parametrize(
    "model", ["periodictask", "intervalschedule", "crontabschedule", "clockedschedule"]
)
def test_add_pages_render(admin_client: Any, model: str) -> None:
    assert admin_client.get(admin_url(model, "add")).status_code == 200


def test_the_task_page_shows_the_schedule_the_next_runs_and_recent_runs(
    admin_client: Any, rows: dict[str, Any]
) -> None:
    content = admin_client.get(
        admin_url("periodictask", "change", rows["periodictask"].pk)
    ).content.decode()
    assert "at 03:00 every day, Europe/Paris" in content
    assert content.count("CEST (UTC+0200)") + content.count("CET (UTC+0100)") >= 5
    assert "run-1" in content and "beat@test" in content
    listing = admin_client.get(admin_url("periodictask")).content.decode()
    assert "at 03:00 every day, Europe/Paris" in listing


def test_the_task_field_lists_registered_tasks(admin_client: Any) -> None:
    content = admin_client.get(admin_url("periodictask", "add")).content.decode()
    assert f'<option value="{RECORD}">' in content
    assert '<option value="tests.testapp.tasks.add">' in content


def form_data(**changes: Any) -> dict[str, Any]:
    data = {
        "name": "added",
        "task": "tests.testapp.tasks.add",
        "enabled": "on",
        "interval": str(IntervalSchedule.objects.get_or_create(every=1, period="minutes")[0].pk),
        "misfire_policy": "run_once",
        "args": "[1, 2]",
        "kwargs": "{}",
        "headers": "",
        "runs-TOTAL_FORMS": "0",
        "runs-INITIAL_FORMS": "0",
        "runs-MIN_NUM_FORMS": "0",
        "runs-MAX_NUM_FORMS": "0",
    }
    data.update(changes)
    return data


def test_a_valid_task_is_saved(admin_client: Any) -> None:
    response = admin_client.post(admin_url("periodictask", "add"), form_data())
    assert response.status_code == 302, response.content.decode()
    added = PeriodicTask.objects.get(name="added")
    assert added.args == [1, 2] and added.kwargs == {} and added.headers == {}
    assert not added.code_managed


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"args": "[1, 2"}, "Not valid JSON: Expecting"),
        (
            {"kwargs": "{'x': 1}"},
            "Not valid JSON: Expecting property name enclosed in double quotes",
        ),
        ({"args": '{"x": 1}'}, "Positional arguments must be a JSON list"),
        ({"kwargs": "[1]"}, "Keyword arguments must be a JSON object"),
        (
            {"args": "[1]"},
            "These arguments do not fit tests.testapp.tasks.add(x, y): missing a required argument: 'y'",
        ),
        ({"kwargs": '{"z": 2}'}, "got an unexpected keyword argument 'z'"),
        ({"interval": ""}, "Choose exactly one schedule"),
        (
            {"crontab": lambda: str(CrontabSchedule.objects.create().pk)},
            "Choose exactly one schedule",
        ),
        ({"priority": "12"}, "less than or equal to 9"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(
    admin_client: Any, changes: dict[str, Any], error: str
) -> None:
    data = form_data(
        **{key: value() if callable(value) else value for key, value in changes.items()}
    )
    response = admin_client.post(admin_url("periodictask", "add"), data)
    assert response.status_code == 200
    content = response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')
    assert error in content
    assert not PeriodicTask.objects.filter(name="added").exists()


def test_a_bound_tasks_signature_leaves_out_self(admin_client: Any) -> None:
    data = form_data(task=RECORD, args="[]", kwargs='{"label": "x"}')
    assert admin_client.post(admin_url("periodictask", "add"), data).status_code == 302
    data = form_data(name="other", task=RECORD, args='["a", "b"]')
    response = admin_client.post(admin_url("periodictask", "add"), data)
    assert (
        "These arguments do not fit tests.testapp.tasks.record(label=&#x27;&#x27;)"
        in response.content.decode()
    )


def test_a_bad_crontab_field_is_named(admin_client: Any) -> None:
    data = {
        "minute": "0",
        "hour": "25",
        "day_of_month": "*",
        "month_of_year": "*",
        "day_of_week": "*",
        "timezone": "UTC",
    }
    response = admin_client.post(admin_url("crontabschedule", "add"), data)
    assert response.status_code == 200
    assert "Invalid crontab hour" in response.content.decode()
    data["hour"] = "3"
    assert admin_client.post(admin_url("crontabschedule", "add"), data).status_code == 302


def test_enable_disable_and_run_now(admin_client: Any, rows: dict[str, Any]) -> None:
    job = rows["periodictask"]
    url = admin_url("periodictask")
    admin_client.post(url, {"action": "disable", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert not job.enabled
    admin_client.post(url, {"action": "enable", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.enabled
    with capture() as queue:
        response = admin_client.post(url, {"action": "run_now", "_selected_action": [job.pk]})
    assert response.status_code == 302
    (message,) = queue.messages
    assert message.task == RECORD and message.kwargs == {"label": XSS}
    run = PeriodicTaskRun.objects.get(task_id=message.id)
    assert run.claimed_by == "admin: admin" and run.sent_at is not None
    job.refresh_from_db()
    assert job.total_run_count == 1 and job.last_run_at is None  # the schedule is unchanged


def test_code_declared_tasks_can_only_be_paused(admin_client: Any, rows: dict[str, Any]) -> None:
    job = rows["periodictask"]
    PeriodicTask.objects.filter(pk=job.pk).update(code_managed=True)
    response = admin_client.get(admin_url("periodictask", "change", job.pk))
    form = response.context["adminform"].form
    assert list(form.fields) == ["enabled"]
    assert "declared in code" in response.content.decode()
    # beat would declare a deleted one again at its next start
    assert admin_client.get(admin_url("periodictask", "delete", job.pk)).status_code == 403
    assert admin_client.post(admin_url("periodictask", "delete", job.pk), {"post": "yes"})
    assert PeriodicTask.objects.filter(pk=job.pk).exists()


FEEDS = {
    "default": {},
    "feed_tasks": {"exchange": "feeds", "exchange_type": "topic", "routing_key": "feed.#"},
}


def test_an_exchange_and_routing_key_are_saved_and_shown(admin_client: Any, settings: Any) -> None:
    settings.TQ = {**settings.TQ, "QUEUES": FEEDS}
    data = form_data(exchange="feeds", routing_key="feed.import")
    assert admin_client.post(admin_url("periodictask", "add"), data).status_code == 302
    added = PeriodicTask.objects.get(name="added")
    assert (added.queue, added.exchange, added.routing_key) == ("", "feeds", "feed.import")
    page = admin_client.get(admin_url("periodictask", "change", added.pk)).content.decode()
    assert 'name="exchange" value="feeds"' in page
    assert 'name="routing_key" value="feed.import"' in page


@pytest.mark.parametrize(
    ("routing", "error"),
    [
        (
            {"exchange": "media", "routing_key": "x"},
            "Exchange 'media' is not declared: no queue of TQ['QUEUES'] is bound to it",
        ),
        (
            {"exchange": "feeds", "routing_key": "orders.new"},
            "Routing key 'orders.new' on exchange 'feeds' (topic) reaches no queue",
        ),
        ({"routing_key": "a b"}, "Use letters, digits and . _ : @ - only (no spaces)."),
    ],
)
def test_a_route_that_reaches_no_queue_is_a_form_error(
    admin_client: Any, settings: Any, routing: dict[str, str], error: str
) -> None:
    settings.TQ = {**settings.TQ, "QUEUES": FEEDS}
    response = admin_client.post(admin_url("periodictask", "add"), form_data(**routing))
    assert response.status_code == 200
    assert error in response.content.decode().replace("&#x27;", "'")
    assert not PeriodicTask.objects.filter(name="added").exists()
