"""The example project: its checks pass, it migrates, an order placed through its form is
charged, and its receipt mailed, by a real worker, and the sales report is rebuilt by a chord, one
rebuild at a time, with rate-limited receipts. Everything runs in subprocesses with the example's
own settings, against a temporary SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "example_project"
MANAGE = PROJECT / "manage.py"


@pytest.fixture
def example_env(tmp_path: Path) -> dict[str, str]:
    """Environment for the example project's processes: its settings, a fresh database file."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="shop.settings",
        EXAMPLE_DB=str(tmp_path / "example.sqlite3"),
        EXAMPLE_STEP_SECONDS="0",
        PYTHONPATH=os.pathsep.join([str(PROJECT), str(ROOT)]),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run ``example_project/manage.py args``; fail with its output unless it exits 0."""
    done = subprocess.run(
        [sys.executable, str(MANAGE), *args],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def run_django(env: dict[str, str], code: str, timeout: float = 120) -> Any:
    """Run ``code`` in a fresh process with the example's settings; return the JSON it prints last."""
    script = "import django, json\ndjango.setup()\n" + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"script failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.django_version
def test_check_migrations_and_migrate(example_env: dict[str, str]) -> None:
    manage(example_env, "check", "--fail-level", "WARNING")
    manage(example_env, "makemigrations", "--check", "--dry-run")
    manage(example_env, "migrate", "--noinput")
    tables = run_django(
        example_env,
        """
        from django.db import connection
        print(json.dumps(sorted(connection.introspection.table_names())))
        """,
    )
    assert {"orders_order", "django_tq_taskresult", "django_tq_queuemessage"} <= set(tables)


PLACE_ORDERS = """
from django.test.utils import setup_test_environment
setup_test_environment()
from django.test import Client
from django_tq.models import QueueMessage, TaskResult
from orders.models import Order

client = Client()
assert client.get("/").status_code == 200
ids = {}
for outcome in ("approve", "decline"):
    response = client.post(
        "/", {"email": "ann@example.com", "product": "mug", "quantity": 2, "payment_outcome": outcome}
    )
    assert response.status_code == 302, response.status_code
    order = Order.objects.get(payment_outcome=outcome)
    assert response["Location"] == f"/tasks/{order.charge_task_id}/", response["Location"]
    assert str(order.total) == "24.00"
    ids[outcome] = order.charge_task_id

# Written with the order, in the same transaction: a QUEUED result and a message row.
assert set(TaskResult.objects.values_list("state", flat=True)) == {"QUEUED"}
assert QueueMessage.objects.filter(queue="default").count() == 2

# An invalid form enqueues nothing.
response = client.post("/", {"email": "nope", "product": "mug", "quantity": 0, "payment_outcome": "approve"})
assert response.status_code == 400
assert Order.objects.count() == 2 and QueueMessage.objects.count() == 2

assert client.get(f"/tasks/{ids['approve']}/").status_code == 200
assert client.get(f"/tasks/{ids['approve']}/status/").json()["state"] == "QUEUED"
assert client.get("/tasks/not-a-task/").status_code == 404
print(json.dumps(ids))
"""

WAIT_FOR_OUTCOMES = """
from django.test.utils import setup_test_environment
setup_test_environment()
from django.test import Client
from django_tq import AsyncResult
from orders.models import Order

ids = json.loads({ids!r})
paid = AsyncResult(ids["approve"]).get(timeout=60)
declined = AsyncResult(ids["decline"])
error = declined.get(timeout=60, propagate=False)
status = Client().get(f"/tasks/{{ids['approve']}}/status/").json()
print(json.dumps({{
    "paid": paid,
    "declined_state": declined.state,
    "declined_error": type(error).__name__,
    "orders": dict(Order.objects.values_list("payment_outcome", "status")),
    "status": status,
}}))
"""


@contextmanager
def worker(env: dict[str, str], log_path: Path) -> Iterator[Path]:
    """Run the example's worker (solo pool, queues default and mail) while the block runs."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(MANAGE), "tqworker", "-P", "solo", "-Q", "default,mail"],
            env=env,
            cwd=PROJECT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield log_path
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                exit_code = process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                raise
    assert exit_code == 0, log_path.read_text(errors="replace")


def test_an_order_is_charged_and_its_receipt_mailed_by_a_worker(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    manage(example_env, "migrate", "--noinput")
    ids = run_django(example_env, PLACE_ORDERS)

    with worker(example_env, tmp_path / "worker.log") as log_path:
        outcome = run_django(example_env, WAIT_FOR_OUTCOMES.format(ids=json.dumps(ids)))
        # The receipt is enqueued when the charge commits; the worker mails it next.
        wait_for(
            lambda: "Your receipt for order" in log_path.read_text(errors="replace"),
            timeout=60,
            what="the receipt in the worker's output",
        )

    assert outcome["paid"]["order"] and outcome["paid"]["total"] == "24.00"
    assert outcome["declined_state"] == "FAILURE"
    assert outcome["declined_error"] == "PaymentDeclined"
    assert outcome["orders"] == {"approve": "paid", "decline": "declined"}
    status = outcome["status"]
    assert status["state"] == "SUCCESS"
    assert [child["name"] for child in status["children"]] == ["send_receipt"]
    assert status["children"][0]["queue"] == "mail"
    assert status["members"] == []  # no workflow of its own: the receipt is a follow-up task


REQUEST_REBUILDS = """
from datetime import timedelta
from django.test.utils import setup_test_environment
setup_test_environment()
from django.test import Client
from django.utils import timezone
from django_tq.beat.scheduler import Scheduler
from django_tq.beat.sync import sync_declared
from django_tq.models import QueueMessage, TaskResult
from orders.models import Order

paid = Order.Status.PAID
Order.objects.create(email="a@example.com", product="mug", quantity=2, total="24.00", status=paid)
Order.objects.create(email="b@example.com", product="hoodie", quantity=1, total="49.00", status=paid)
Order.objects.create(email="c@example.com", product="tee", quantity=3, total="72.00")

client = Client()
first = client.post("/reports/rebuild/")
again = client.post("/reports/rebuild/", follow=True)
messages = QueueMessage.objects.count()
results = list(TaskResult.objects.values_list("task_name", flat=True))

# Beat's "sales-report" falls due at the next minute while the rebuild is queued: it joins it.
sync_declared()
minute = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
beat = [sent.periodic_task for sent in Scheduler().tick(minute + timedelta(seconds=1))]
print(json.dumps({
    "first": first["Location"],
    "again": again.redirect_chain[0][0],
    "again_page": again.content.decode(),
    "first_page": client.get(first["Location"]).content.decode(),
    "messages": messages,
    "results": results,
    "beat": beat,
    "rebuilds": TaskResult.objects.filter(task_name="orders.tasks.rebuild_report").count(),
}))
"""

WAIT_FOR_REPORT = """
from django.contrib.auth.models import User
from django.test.utils import setup_test_environment
setup_test_environment()
from django.test import Client
from django_tq import AsyncResult
from django_tq.models import TaskResult
from orders.models import Order, SalesReport
from orders.tasks import send_receipt

task_id = {task_id!r}
returned = AsyncResult(task_id).get(timeout=60)
reports = list(SalesReport.objects.values("orders", "paid_orders", "revenue", "by_product", "task_id"))
staff = Client()
staff.force_login(User.objects.create_superuser("admin", "admin@example.com", "admin"))
page = staff.get(f"/tasks/{{task_id}}/").content.decode()
graph = staff.get(f"/admin/django_tq/groupresult/graph/{{task_id}}/")
next_rebuild = Client().post("/reports/rebuild/")["Location"]
receipts = [send_receipt.delay(order.pk) for order in Order.objects.filter(status="paid")]
for receipt in receipts:
    receipt.get(timeout=60)
print(json.dumps({{
    "returned": returned,
    "reports": reports,
    "status": Client().get(f"/tasks/{{task_id}}/status/").json(),
    "staff_page": page,
    "graph_status": graph.status_code,
    "next_rebuild": next_rebuild,
    "receipts_started": sorted(
        started.timestamp()
        for started in TaskResult.objects.filter(task_id__in=[r.id for r in receipts])
        .values_list("date_started", flat=True)
    ),
}}, default=str))
"""


def test_the_report_is_rebuilt_by_a_chord_one_rebuild_at_a_time(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    manage(example_env, "migrate", "--noinput", "-v", "0")
    asked = run_django(example_env, REQUEST_REBUILDS)
    # rebuild_report is unique: the second press returns the rebuild already queued, and says so.
    assert asked["again"] == asked["first"]
    assert "A rebuild is already under way" in asked["again_page"]
    assert "already under way" not in asked["first_page"]
    assert asked["messages"] == 1 and asked["results"] == ["orders.tasks.rebuild_report"]
    assert "sales-report" in asked["beat"] and asked["rebuilds"] == 1
    task_id = asked["first"].split("/")[-2]

    with worker(example_env, tmp_path / "worker.log"):
        outcome = run_django(example_env, WAIT_FOR_REPORT.format(task_id=task_id))

    expected = {
        "orders": 3,
        "paid_orders": 2,
        "revenue": "73.00",
        "by_product": {"hoodie": 1, "mug": 2},
    }
    # The chord's body took over the rebuild's id: its result is the report it wrote, once.
    assert outcome["returned"] == expected
    assert outcome["reports"] == [{**expected, "task_id": task_id}]
    status = outcome["status"]
    assert status["state"] == "SUCCESS" and status["done"]
    members = [(member["name"], member["args"], member["state"]) for member in status["members"]]
    assert members == [
        ("product_figures", product, "SUCCESS") for product in ("mug", "tee", "hoodie", "poster")
    ]
    assert status["group_id"] and f"group_id={status['group_id']}" in outcome["staff_page"]
    assert f"/admin/django_tq/groupresult/graph/{task_id}/" in outcome["staff_page"]
    assert outcome["graph_status"] == 200
    # Once the report is written the key is free: the next press starts a new rebuild.
    assert outcome["next_rebuild"] != asked["first"]
    # send_receipt's rate limit, "30/m", spaces the starts of the two receipts by 2 s.
    first, second = outcome["receipts_started"]
    assert second - first >= 1.9


@pytest.mark.django_version
def test_demo_data_fills_every_screen_and_can_run_again(example_env: dict[str, str]) -> None:
    manage(example_env, "migrate", "--noinput", "-v", "0")
    manage(example_env, "demo_data")
    manage(example_env, "demo_data")
    counts = run_django(
        example_env,
        """
        from django_tq import models
        print(json.dumps({
            "states": sorted(set(models.TaskResult.objects.values_list("state", flat=True))),
            "dead_letters": models.DeadLetter.objects.count(),
            "workers": models.WorkerState.objects.count(),
            "periodic_tasks": models.PeriodicTask.objects.count(),
            "samples": models.QueueDepthSample.objects.count(),
        }))
        """,
    )
    assert counts["states"] == [
        "DEAD", "FAILURE", "PENDING", "PROGRESS", "QUEUED", "RECEIVED", "RETRY", "REVOKED",
        "STARTED", "SUCCESS",
    ]  # fmt: skip
    assert counts["dead_letters"] == 3
    assert counts["workers"] == 4
    assert counts["periodic_tasks"] >= 4
    assert 2 * 24 * 60 <= counts["samples"] <= 2 * (24 * 60 + 2)  # a minute may pass between runs
