"""The admin dashboard: its numbers and charts, its permission, its queries, and its samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_tq import states
from django_tq.admin import charts, dashboard
from django_tq.models import DeadLetter, QueueDepthSample, TaskResult, WorkerState
from django_tq.models.workers import LOST_AFTER
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db

URL = "/admin/django_tq/dashboard/"
NOW = datetime(2026, 11, 30, 12, 30, 20, tzinfo=UTC)
XSS = "<script>alert(1)</script>"


def finished(task_id: str, state: str, done: datetime, **fields: Any) -> TaskResult:
    values = {"task_name": "tests.testapp.tasks.add", **fields}
    return TaskResult.objects.create(task_id=task_id, state=state, date_done=done, **values)


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("admin", "admin@example.com", None)


@pytest.mark.django_version
def test_the_dashboard_url_is_the_admin_changelist_of_dashboard():
    assert reverse("admin:django_tq_dashboard_changelist") == URL


@pytest.mark.db
def test_throughput_counts_finished_tasks_per_minute_by_outcome():
    window = dashboard.WINDOWS["1h"]
    finished("a", states.SUCCESS, NOW - timedelta(seconds=5))
    finished("b", states.SUCCESS, NOW - timedelta(seconds=15))
    finished("c", states.FAILURE, NOW - timedelta(minutes=2))
    finished("d", states.DEAD, NOW - timedelta(minutes=2, seconds=15))
    finished("e", states.REVOKED, NOW - timedelta(minutes=59))
    finished("too-old", states.SUCCESS, NOW - timedelta(minutes=61))
    TaskResult.objects.create(task_id="running", task_name="x", state=states.STARTED)
    starts = window.starts(NOW)
    assert len(starts) == 60
    assert starts[-1] == datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
    assert starts[0] == datetime(2026, 11, 30, 11, 31, tzinfo=UTC)

    done = dashboard.throughput(window, starts)

    assert done["succeeded"][-1] == 2
    assert done["failed"][-3] == 2  # 12:28, a FAILURE and a DEAD
    assert done["other"][0] == 1  # 11:31, the revoked one
    assert sum(done["succeeded"]) + sum(done["failed"]) + sum(done["other"]) == 5


@pytest.mark.db
def test_hourly_buckets_cover_the_last_24_hours():
    window = dashboard.WINDOWS["24h"]
    finished("a", states.SUCCESS, NOW - timedelta(hours=23, minutes=10))
    finished("b", states.FAILURE, NOW - timedelta(minutes=40))
    starts = window.starts(NOW)
    done = dashboard.throughput(window, starts)
    assert len(starts) == 24
    assert starts[-1] == datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert done["succeeded"][0] == 1
    assert done["failed"][-2] == 1  # 11:50 is in the 11:00 bucket


@pytest.mark.db
def test_depth_history_keeps_the_peak_per_bucket_and_gaps_where_no_sample():
    window = dashboard.WINDOWS["1h"]
    QueueDepthSample.objects.record([("default", 4), ("mail", 1)], NOW - timedelta(minutes=3))
    QueueDepthSample.objects.record([("default", 9)], NOW)
    history = dashboard.depth_history(window, window.starts(NOW))
    assert list(history) == ["default", "mail"]
    assert history["default"][-1] == 9
    assert history["default"][-4] == 4
    assert history["default"][-2] is None
    assert history["mail"][-4] == 1


@pytest.mark.db
def test_one_sample_per_queue_and_minute_however_many_workers_record():
    QueueDepthSample.objects.record([("default", 4)], NOW)
    QueueDepthSample.objects.record([("default", 7)], NOW + timedelta(seconds=30))
    QueueDepthSample.objects.record([("default", 5)], NOW + timedelta(minutes=1))
    samples = list(QueueDepthSample.objects.values_list("depth", "sampled_at"))
    assert samples == [
        (4, datetime(2026, 11, 30, 12, 30, tzinfo=UTC)),
        (5, datetime(2026, 11, 30, 12, 31, tzinfo=UTC)),
    ]


@pytest.mark.django_version
def test_the_dashboard_shows_numbers_charts_and_recent_failures(admin_client):
    now = timezone.now()
    finished("ok-1", states.SUCCESS, now)
    failed = finished(
        "failed-1",
        states.FAILURE,
        now,
        task_name=f"shop.{XSS}",
        result={"exc_type": "builtins.ValueError", "exc_message": XSS, "exc_args": [XSS]},
    )
    WorkerState.objects.create(
        hostname="alive@test",
        pid=1,
        pool="solo",
        concurrency=1,
        started_at=now,
        last_heartbeat=now,
    )
    WorkerState.objects.create(
        hostname="lost@test", pid=2, pool="solo", concurrency=1, started_at=now,
        last_heartbeat=now - LOST_AFTER * 2,
    )  # fmt: skip
    DeadLetter.objects.create(task_id="dead-1", queue="default", reason="poison")
    QueueDepthSample.objects.record([("default", 3)], now)

    response = admin_client.get(URL)

    assert response.status_code == 200
    page = response.content.decode()
    assert page.count('<svg class="tq-chart" role="img"') == 3
    assert '<title id="tq-chart-throughput-title">Throughput</title>' in page
    assert "Tasks finished per hour" in page or "tasks per hour" in page
    assert reverse("admin:django_tq_taskresult_change", args=[failed.pk]) in page
    assert "ValueError" in page
    assert XSS not in page
    assert "shop.&lt;script&gt;" in page
    cards = response.context["workers"]
    assert cards == {"alive": 1, "lost": 1}
    assert response.context["finished"] == 2
    assert response.context["failed"] == 1
    assert response.context["failure_rate"] == "50.0%"
    assert response.context["dead_letters"] == 1


@pytest.mark.django_version
@pytest.mark.parametrize("window", ["1h", "24h", "7d"])
def test_every_window_renders(admin_client, window):
    response = admin_client.get(URL, {"window": window})
    assert response.status_code == 200
    assert response.context["window"].key == window


def test_an_unknown_window_falls_back_to_the_default(admin_client):
    response = admin_client.get(URL, {"window": "'; DROP TABLE x"})
    assert response.context["window"].key == dashboard.DEFAULT_WINDOW


@pytest.mark.db
def test_the_query_count_does_not_grow_with_the_data(admin_client):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(URL, {"window": "1h"}).status_code == 200
        return len(captured)

    now = timezone.now()
    finished("one", states.FAILURE, now)
    small = queries()
    for index in range(40):
        finished(f"r-{index}", [states.SUCCESS, states.FAILURE][index % 2], now)
        QueueDepthSample.objects.record(
            [(f"queue-{index % 5}", index)], now - timedelta(minutes=index)
        )
        DeadLetter.objects.create(task_id=f"d-{index}", queue="default", reason="x")
    assert queries() == small
    assert small <= 12


@pytest.mark.django_version
def test_the_dashboard_is_listed_in_the_admin_index(admin_client):
    assert URL in admin_client.get(reverse("admin:index")).content.decode()


@pytest.mark.django_version
def test_staff_without_view_taskresult_may_not_see_the_dashboard(client, django_user_model):
    staff = django_user_model.objects.create_user("staff", password=None, is_staff=True)
    client.force_login(staff)
    assert client.get(URL).status_code == 403
    assert URL not in client.get(reverse("admin:index")).content.decode()

    staff.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    assert client.get(URL).status_code == 200
    assert URL in client.get(reverse("admin:index")).content.decode()


@pytest.mark.django_version
def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.django_version
def test_the_dashboard_has_no_add_change_or_delete_pages(admin_client):
    assert admin_client.get(URL + "add/").status_code == 404


# -- charts -------------------------------------------------------------------------------------
@pytest.mark.django_version
def test_charts_escape_every_text_and_label_their_axes():
    series = [charts.Series(name=XSS, values=(1, None, 3), colour="#000")]
    for draw in (charts.bar_chart, charts.line_chart):
        svg = draw(
            key="x", title=XSS, description=XSS, y_label="tasks", x_labels=["a", XSS, "c"],
            series=series,
        )  # fmt: skip
        assert XSS not in svg
        assert "&lt;script&gt;" in svg
        assert 'aria-labelledby="tq-chart-x-title tq-chart-x-desc"' in svg
        assert ">tasks</text>" in svg
    assert XSS not in charts.legend(series)


def test_bar_heights_are_in_proportion_and_empty_buckets_draw_nothing():
    svg = charts.bar_chart(
        key="b", title="t", description="d", y_label="y", x_labels=["a", "b", "c"],
        series=[charts.Series(name="n", values=(1, 0, 2), colour="#123456")],
    )  # fmt: skip
    assert svg.count("<rect") == 2
    plot = charts.HEIGHT - charts.TOP - charts.BOTTOM
    assert f'height="{plot / 2:.2f}"' in svg  # 1 of a 2-high axis
    assert f'height="{plot:.2f}"' in svg


def test_lines_break_where_values_are_missing():
    svg = charts.line_chart(
        key="l", title="t", description="d", y_label="y", x_labels=list("abcde"),
        series=[charts.Series(name="q", values=(1, 2, None, 3, 4), colour="#123456")],
    )  # fmt: skip
    assert svg.count("<polyline") == 2
    assert svg.count("<circle") == 4


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (240, 250), (4001, 5000)]
)
def test_nice_ceiling(value, ceiling):
    assert charts.nice_ceiling(value) == ceiling


# -- the worker's samples -----------------------------------------------------------------------
@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_a_running_worker_samples_the_depth_of_every_queue(broker_url, queue_name, start_worker):
    from tests.testapp.tasks import add

    waiting = f"{queue_name}-other"
    for number in range(3):
        add.apply_async((number, 1), queue=waiting)  # nobody consumes it
    start_worker("-P", "solo", "-Q", queue_name)
    wait_for(
        lambda: QueueDepthSample.objects.filter(queue=waiting, depth=3).exists(),
        what="a depth sample of the waiting queue",
    )
    assert QueueDepthSample.objects.filter(queue=queue_name).exists()


@pytest.mark.db
@pytest.mark.django_db(transaction=True)
def test_the_worker_prunes_samples_with_expired_results(settings, start_worker):
    settings.TQ = {**settings.TQ, "RESULT_EXPIRES": 3600}
    QueueDepthSample.objects.record([("default", 1)], timezone.now() - timedelta(hours=2))
    start_worker("-P", "solo")
    wait_for(
        lambda: (
            not QueueDepthSample.objects.filter(
                sampled_at__lt=timezone.now() - timedelta(hours=1)
            ).exists()
        ),
        what="old samples deleted",
    )
    assert QueueDepthSample.objects.filter(queue="default").exists()  # its fresh sample


@pytest.mark.django_version
def test_queues_link_to_their_results(admin_client):
    response = admin_client.get(URL)
    names = [queue.name for queue, _ in response.context["queues"]]
    assert "default" in names
    assert 'href="/admin/django_tq/taskresult/?queue__exact=default"' in response.content.decode()
