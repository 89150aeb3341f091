"""The cut-over of docs/migrating-from-celery.md, followed end to end on a small Celery project.

The project is the one a Celery user has: a ``proj/celery.py`` app, ``shared_task``\\s in two apps
routed to queues of their own (``billing``, ``reports``), django-celery-beat with an interval and a
crontab ``PeriodicTask``, django-celery-results storing results, Redis or RabbitMQ as the broker.
The test writes it into a temporary directory with its own PostgreSQL database and runs the
guide's steps with real processes: Celery's worker and beat, ``tqworker --accept-celery``,
``tqimport``, ``tqbeat``. An old producer keeps publishing Celery messages while the first app
moves. On RabbitMQ, Celery declares its queues first, as a deployment that ran for years did:
durable, with no ``x-max-priority`` (Celery's default) — django_tq uses them as they are.
Queue names carry a suffix of the test's own (the RabbitMQ server is shared).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.conftest import AMQP_URL, ROOT, delete_queues, require_service, wait_for

pytest.importorskip("celery")
pytest.importorskip("django_celery_beat")
pytest.importorskip("django_celery_results")

pytestmark = pytest.mark.slow

#: a Redis database of the test's own (the suite's per-xdist-worker ones are shared with other tests)
REDIS_URL = "redis://127.0.0.1:6379/13"
#: the brokers the walk runs on: URL, service name, port
BROKERS = {"redis": (REDIS_URL, "Redis", 6379), "amqp": (AMQP_URL, "RabbitMQ", 5672)}

SETTINGS = """
import os

SECRET_KEY = "cutover"
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django_celery_beat",
    "django_celery_results",
    "billing",
    "reports",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "proj.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": os.environ["PROJ_DB"],
                         "USER": "postgres", "HOST": "127.0.0.1", "PORT": 5432}}
BROKER = os.environ["PROJ_BROKER"]
BILLING, REPORTS = "billing" + os.environ["PROJ_SUFFIX"], "reports" + os.environ["PROJ_SUFFIX"]
CELERY_BROKER_URL = BROKER
CELERY_TASK_DEFAULT_QUEUE = "celery" + os.environ["PROJ_SUFFIX"]
CELERY_RESULT_BACKEND = "django-db"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_MAX_LOOP_INTERVAL = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ROUTES = {"billing.*": {"queue": BILLING}, "reports.*": {"queue": REPORTS}}
#: a topic exchange, as in Celery's routing guide: keys feed.* reach the feeds queue
from kombu import Exchange, Queue
FEEDS = "feeds" + os.environ["PROJ_SUFFIX"]
CELERY_TASK_QUEUES = [Queue(FEEDS, Exchange(FEEDS, type="topic"), routing_key="feed.#")]
"""
#: step 1 of the guide: the app, its URLs (the REST API) and TQ, routing as Celery did
DJANGO_TQ_SETTINGS = """
INSTALLED_APPS += ["rest_framework", "django_tq"]
TQ = {"BROKER_URL": BROKER, "TASK_ROUTES": CELERY_TASK_ROUTES, "BEAT_MAX_LOOP_INTERVAL": 1,
      "QUEUES": {FEEDS: {"exchange": FEEDS, "exchange_type": "topic", "routing_key": "feed.#"}}}
"""
FILES = {
    "manage.py": """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
""",
    "proj/__init__.py": "from .celery import app as celery_app\n",
    "proj/celery.py": """
import os
from celery import Celery
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
""",
    "proj/settings.py": SETTINGS,
    "proj/urls.py": """
from django.apps import apps
from django.urls import include, path
urlpatterns = []
if apps.is_installed("django_tq"):
    urlpatterns.append(path("api/tq/", include("django_tq.api.urls")))
""",
    "billing/__init__.py": "",
    "billing/tasks.py": """
from celery import shared_task


@shared_task
def charge(order_id, amount):
    return {"order": order_id, "charged": amount}
""",
    "reports/__init__.py": "",
    "reports/migrations/__init__.py": "",
    "reports/migrations/0001_initial.py": """
from django.db import migrations, models
class Migration(migrations.Migration):
    initial = True
    operations = [migrations.CreateModel("Tick", [
        ("id", models.BigAutoField(primary_key=True)),
        ("label", models.CharField(max_length=50)),
        ("at", models.DateTimeField(auto_now_add=True)),
    ])]
""",
    "reports/models.py": """
from django.db import models
class Tick(models.Model):
    label = models.CharField(max_length=50)
    at = models.DateTimeField(auto_now_add=True)
""",
    "reports/tasks.py": """
from celery import shared_task

from reports.models import Tick


@shared_task
def tick(label):
    Tick.objects.create(label=label)
    return label


@shared_task
def summary(day):
    return f"summary for {day}"
""",
    #: a producer in another service, still on Celery: publishes charges until told how many
    "old_producer.py": """
import sys, time
from celery import Celery
app = Celery("old", broker=sys.argv[1])
app.conf.update(task_serializer="json", task_routes={"billing.*": {"queue": sys.argv[3]}})
ids = []
for i in range(int(sys.argv[2])):
    ids.append(app.send_task("billing.tasks.charge", (1000 + i, 5)).id)
    time.sleep(0.02)
open("old-ids.txt", "w").write("\\n".join(ids))
""",
}
SCHEDULES = """
from django.conf import settings
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
every, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
PeriodicTask.objects.create(name="tick", interval=every, task="reports.tasks.tick", args='["beat"]')
# with its queue named: on Redis, Celery's beat drops a message sent to a topic exchange that
# it never declared itself (kombu keeps exchange types in each process's memory)
PeriodicTask.objects.create(name="feeds", interval=every, task="reports.tasks.tick", args='["feed"]',
                            queue=settings.FEEDS, exchange=settings.FEEDS, routing_key="feed.import")
nightly = CrontabSchedule.objects.create(minute="30", hour="3", timezone="Europe/Paris")
PeriodicTask.objects.create(name="nightly summary", crontab=nightly, task="reports.tasks.summary",
                            kwargs='{"day": "yesterday"}')
"""


class Project:
    """The walkthrough project in a directory, with its own database and queue names."""

    def __init__(self, path: Path, database: str, broker_url: str, suffix: str) -> None:
        self.path = path
        self.broker_url = broker_url
        self.is_amqp = broker_url.startswith("amqp")
        self.billing, self.reports = f"billing{suffix}", f"reports{suffix}"
        #: bound to the topic exchange of the same name with feed.#
        self.feeds = f"feeds{suffix}"
        #: every queue the walk makes (Celery's default one too), for the cleanup
        self.queues = [self.billing, self.reports, self.feeds, f"celery{suffix}"]
        self.env = {
            **os.environ,
            "PROJ_DB": database,
            "PROJ_BROKER": broker_url,
            "PROJ_SUFFIX": suffix,
        }
        self.env["PYTHONPATH"] = f"{path}{os.pathsep}{ROOT}"
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for name, text in FILES.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(text.lstrip())

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def manage(self, *args: str) -> str:
        done = self.run("manage.py", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def shell(self, code: str) -> Any:
        """Run ``code`` in ``manage.py shell``; it prints one JSON value, returned."""
        return json.loads(self.manage("shell", "-v", "0", "-c", code).strip().splitlines()[-1])

    def start(self, name: str, *args: str) -> None:
        log = (self.path / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, *args],
            cwd=self.path,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_celery_worker(self, *queues: str) -> None:
        # without mingle and gossip: other Celery workers on the shared RabbitMQ are not ours
        self.start(
            "celery-worker", "-m", "celery", "-A", "proj", "worker", "-Q", ",".join(queues),
            "-c", "2", "-n", "celery@%h", "-l", "info", "--without-mingle", "--without-gossip",
        )  # fmt: skip

    def log(self, name: str) -> str:
        return (self.path / f"{name}.log").read_text(errors="replace")

    def wait_log(self, name: str, text: str) -> None:
        wait_for(lambda: text in self.log(name), 30, what=f"{text!r} in {name}'s log")

    def stop(self, name: str) -> None:
        """SIGTERM (a warm shutdown: what it holds is finished or handed back), then wait."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            raise AssertionError(f"{name} did not stop on SIGTERM:\n{self.log(name)}")

    def switch(self, app: str) -> None:
        """Move one app's producers (and its tasks) to django_tq: the import line changes."""
        tasks = self.path / app / "tasks.py"
        tasks.write_text(tasks.read_text().replace("from celery import", "from django_tq import"))

    def close(self) -> None:
        """Kill every process still running (each whole session), whatever the test left."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _delete_exchanges(names: list[str]) -> None:
    from django_tq.broker import Broker

    with Broker(AMQP_URL).connection() as conn:
        for name in names:
            with contextlib.suppress(*conn.channel_errors):
                conn.channel().exchange_delete(name)


@pytest.fixture(params=list(BROKERS))
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    url, service, port = BROKERS[request.param]
    require_service("PostgreSQL", 5432)
    require_service(service, port)
    database = f"tq_cutover_{os.getpid()}"
    admin = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {database}")
    admin.execute(f"CREATE DATABASE {database}")
    client = redis.Redis.from_url(REDIS_URL)
    created = set(client.keys())
    walk = Project(tmp_path, database, url, f"-{uuid.uuid4().hex[:8]}")
    try:
        yield walk
    finally:
        walk.close()
        if walk.is_amqp:
            delete_queues(url, walk.queues)
            _delete_exchanges(walk.queues)
        else:
            new = set(client.keys()) - created  # only what this test created in its database
            if new:
                client.delete(*new)
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()


def test_the_cut_over_loses_nothing_and_runs_each_schedule_once(project: Project) -> None:
    # Before: the Celery project as it runs today
    project.manage("migrate", "-v", "0")
    project.shell(SCHEDULES + "print(1)")
    project.start_celery_worker(project.billing, project.reports, project.feeds)
    project.start("celery-beat", "-m", "celery", "-A", "proj", "beat", "-s", "celerybeat-schedule")
    project.wait_log("celery-worker", " ready.")
    celery_charge = project.shell(
        "from billing.tasks import charge; r = charge.delay(1, 10); r.get(timeout=60); print(json.dumps(r.id))".replace(
            "print", "import json; print", 1
        )
    )
    ticks = (
        "from reports.models import Tick; import json;"
        "print(json.dumps(sorted(set(Tick.objects.values_list('label', flat=True)))))"
    )
    wait_for(lambda: project.shell(ticks) == ["beat", "feed"], 30, what="Celery beat's ticks")

    # Step 1: install django_tq beside Celery
    (project.path / "proj/settings.py").write_text(SETTINGS + DJANGO_TQ_SETTINGS)
    project.manage("migrate", "-v", "0")

    # Step 2, first app: billing moves; an old producer goes on publishing Celery messages
    project.switch("billing")
    project.start(
        "tq-worker-billing", "manage.py", "tqworker", "-Q", project.billing, "--accept-celery",
        "-c", "2",
    )  # fmt: skip
    project.wait_log("tq-worker-billing", "ready")
    if project.is_amqp:  # Celery's queue, declared with no x-max-priority: used as it is
        project.wait_log(
            "tq-worker-billing",
            f"Queue {project.billing!r} exists on RabbitMQ with other arguments",
        )
    project.start("old-producer", "old_producer.py", project.broker_url, "100", project.billing)
    time.sleep(1)
    project.stop("celery-worker")  # and back on the apps not moved yet
    project.start_celery_worker(project.reports, project.feeds)
    new_charge = project.shell(
        "import json; from billing.tasks import charge; from django_tq import AsyncResult;"
        "r = charge.delay(7, 70); print(json.dumps([type(r).__module__, AsyncResult(r.id).get(timeout=60)]))"
    )
    assert new_charge == ["django_tq.result", {"order": 7, "charged": 70}]
    assert project.processes["old-producer"].wait(30) == 0

    # Step 2, second app: reports moves; the last Celery worker stops
    project.switch("reports")
    project.start(
        "tq-worker", "manage.py", "tqworker", "-Q",
        f"{project.billing},{project.reports},{project.feeds}", "--accept-celery", "-c", "2",
    )  # fmt: skip
    project.wait_log("tq-worker", "ready")
    project.stop("tq-worker-billing")
    project.stop("celery-worker")

    # Step 3: schedules: Celery's beat stops, the import (dry run first), then tqbeat
    project.stop("celery-beat")
    dry = project.manage("tqimport", "celery-beat", "--dry-run")
    assert "Dry run, nothing written: celery-beat: 4 periodic tasks: 3 imported" in dry
    real = project.manage(
        "tqimport", "celery-beat", "--celery-broker", "amqp" if project.is_amqp else "redis"
    )
    assert "3 imported, 0 updated, 0 unchanged, 1 skipped, 0 failed" in real
    beat_started = time.time()
    project.start("tqbeat", "manage.py", "tqbeat")
    project.wait_log("tqbeat", "ready: 3 enabled periodic task(s)")
    time.sleep(5)
    project.stop("tqbeat")
    time.sleep(1)

    # Step 4: the old results
    imported = project.manage("tqimport", "celery-results")
    assert " 0 failed." in imported
    again = project.manage("tqimport", "celery-results")
    assert "nothing to do" in again

    sent, feeds_sent = (
        re.findall(
            rf"Sent reports\.tasks\.tick\[([-0-9a-f]+)\] for periodic task '{name}' \((.+)\)",
            project.log("tqbeat"),
        )
        for name in ("tick", "feeds")
    )
    beat_ids = [task_id for task_id, _ in sent]
    feeds_ids = [task_id for task_id, _ in feeds_sent]
    waiting = (  # what is left in the billing queue: RabbitMQ's count, or kombu's Redis list
        f"__import__('django_tq.broker').broker.get_broker().depth({project.billing!r})"
        if project.is_amqp
        else f"__import__('redis').Redis.from_url({project.broker_url!r}).llen({project.billing!r})"
    )
    outcome = project.shell(f"""
import json
from django.contrib.auth.models import User
from django.test import Client
from django_tq import AsyncResult
from django_tq.models import DeadLetter, PeriodicTask, TaskResult
from django_celery_beat.models import PeriodicTask as CeleryTask
ids = open("old-ids.txt").read().split()
client = Client()
client.force_login(User.objects.create_superuser("admin", "a@example.com", "x"))
api = client.get("/api/tq/results/{celery_charge}/")
print(json.dumps({{
    "sent": len(ids),
    "succeeded": TaskResult.objects.filter(task_id__in=ids, state="SUCCESS").count(),
    "run_here": TaskResult.objects.filter(task_id__in=ids, state="SUCCESS").exclude(
        meta__has_key="imported_from").count(),
    "waiting": {waiting},
    "dead": list(DeadLetter.objects.values_list("reason", flat=True)),
    "celery_result": AsyncResult("{celery_charge}").get(timeout=1),
    "api": [api.status_code, api.json().get("result") if api.status_code == 200 else api.content.decode()],
    "celery_runs": CeleryTask.objects.get(name="tick").total_run_count,
    "tq_runs": PeriodicTask.objects.get(name="tick").total_run_count,
    "beat_ticks_run": TaskResult.objects.filter(task_id__in={beat_ids!r}, state="SUCCESS").count(),
    "enabled": sorted(PeriodicTask.objects.filter(enabled=True).values_list("name", flat=True)),
    "feeds_route": list(PeriodicTask.objects.filter(name="feeds").values_list(
        "queue", "exchange", "routing_key").get()),
    "feeds_celery_runs": CeleryTask.objects.get(name="feeds").total_run_count,
    "feeds_tq_runs": PeriodicTask.objects.get(name="feeds").total_run_count,
    "feeds_run_in": sorted(set(TaskResult.objects.filter(task_id__in={feeds_ids!r},
        state="SUCCESS").values_list("queue", flat=True))),
    "feeds_run": TaskResult.objects.filter(task_id__in={feeds_ids!r}, state="SUCCESS").count(),
}}))
""")
    print(json.dumps(outcome))  # the figures the guide quotes (pytest -s shows them)
    assert outcome["sent"] == 100
    assert outcome["succeeded"] == 100, json.dumps(
        outcome
    )  # every Celery message ran once, here or there
    assert outcome["dead"] == []
    assert outcome["waiting"] == 0
    assert outcome["celery_result"] == {"order": 1, "charged": 10}
    assert outcome["api"] == [200, {"order": 1, "charged": 10}]
    assert outcome["enabled"] == ["feeds", "nightly summary", "tick"]
    # tqbeat went on from Celery's count, and each occurrence ran once: no Celery tick after it
    assert outcome["tq_runs"] > outcome["celery_runs"]
    assert len(sent) == outcome["tq_runs"] - outcome["celery_runs"]
    assert len({occurrence for _, occurrence in sent}) == len(sent)  # no occurrence sent twice
    assert outcome["beat_ticks_run"] == len(sent)  # and each ran, once (one result per id)
    # the schedule with an exchange and routing key kept both, and tqbeat sent through them
    assert outcome["feeds_route"] == [project.feeds, project.feeds, "feed.import"]
    assert outcome["feeds_tq_runs"] - outcome["feeds_celery_runs"] == len(feeds_sent) > 0
    assert outcome["feeds_run"] == len(feeds_sent)
    assert outcome["feeds_run_in"] == [project.feeds]
    assert time.time() - beat_started < 30
