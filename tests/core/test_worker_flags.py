"""tqworker's operator flags: --hostname variables, --pidfile, --logfile, --detach, --autoreload."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_tq.models import TaskResult, WorkerState
from django_tq.worker.daemon import Pidfile, PidfileLocked
from django_tq.worker.nodename import expand
from tests.conftest import ROOT, wait_for, worker_env
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("w1@%h", "w1@web-1.example.com"),
        ("w1@%n", "w1@web-1"),
        ("%d", "example.com"),
        ("%p.log", "mail@web-1.example.com.log"),
        ("w%i%I.log", "w0.log"),
        ("100%%", "100%"),
    ],
)
def test_variables_expand_as_in_celery(template, expected):
    assert expand(template, nodename="mail@web-1.example.com", host="web-1.example.com") == expected


def test_an_index_expands_with_and_without_separator():
    assert expand("w%i%I", index=3, host="h") == "w3-3"


def test_an_unknown_variable_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown variable %x"):
        expand("w@%x")
    with pytest.raises(CommandError, match="unknown variable %q"):
        call_command("tqworker", "-n", "w@%q")


def test_detach_needs_a_logfile():
    with pytest.raises(CommandError, match="--detach needs --logfile"):
        call_command("tqworker", "--detach")


def test_a_stale_pidfile_is_replaced_and_a_live_one_refused(tmp_path):
    path = tmp_path / "w.pid"
    path.write_text("999999999\n")  # no such process
    pidfile = Pidfile(path)
    pidfile.acquire()
    assert path.read_text().strip() == str(os.getpid())
    pidfile.release()
    assert not path.exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path.write_text(f"{sleeper.pid}\n")
        with pytest.raises(PidfileLocked, match=f"pid {sleeper.pid}"):
            Pidfile(path).acquire()
        assert path.read_text().strip() == str(sleeper.pid)  # left alone
    finally:
        sleeper.kill()
        sleeper.wait()


def test_hostname_variables_reach_the_heartbeat(queue_name, settings, start_worker):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    start_worker("-n", "probe@%n", "-P", "solo")
    short = socket.gethostname().partition(".")[0]
    wait_for(lambda: WorkerState.objects.filter(hostname=f"probe@{short}").exists(), 20)


def test_pidfile_and_logfile_of_a_running_worker(queue_name, settings, start_worker, tmp_path):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    pidfile, log = tmp_path / "run" / "%n.pid", tmp_path / "%n.log"
    short = socket.gethostname().partition(".")[0]
    worker = start_worker(
        "-n",
        "files@%h",
        "--pidfile",
        str(pidfile),
        "--logfile",
        str(log),
        "-P",
        "solo",
        ready=False,
    )
    logged = tmp_path / f"{short}.log"
    wait_for(lambda: logged.exists() and "ready" in logged.read_text(), 30, what="ready in log")
    assert (tmp_path / "run" / f"{short}.pid").read_text().strip() == str(worker.pid)
    second = start_worker("--pidfile", str(pidfile), "-P", "solo", ready=False)
    assert second.process.wait(30) != 0
    assert "stop it first" in second.output()
    assert worker.stop() == 0
    assert not (tmp_path / "run" / f"{short}.pid").exists()


def test_detach_runs_in_the_background_until_sigterm(queue_name, settings, tmp_path):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    pidfile, log = tmp_path / "w.pid", tmp_path / "w.log"
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "tqworker",
            "--detach",
            "-P",
            "solo",
            "--pidfile",
            str(pidfile),
            "--logfile",
            str(log),
        ],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30))
    try:
        assert os.getsid(pid) != os.getsid(0)  # a session of its own, not the terminal's
        wait_for(lambda: "ready" in log.read_text(), 30, what="ready in the log")
        result = record.delay("detached")
        assert result.get(timeout=30) == "detached"
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pidfile.exists(), 30, what="pidfile removed")
        assert "stopped" in log.read_text()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_autoreload_starts_again_in_the_same_process_when_code_changes(
    queue_name, settings, start_worker, tmp_path
):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    worker = start_worker("--autoreload", "-P", "solo")
    assert record.delay("before").get(timeout=30) == "before"
    source = ROOT / "tests" / "testapp" / "tasks.py"
    stat = source.stat()
    os.utime(source, (stat.st_atime, stat.st_mtime + 5))  # as an editor's save does
    try:
        wait_for(lambda: worker.output().count("ready") >= 2, 30, what="second ready")
    finally:
        os.utime(source, (stat.st_atime, stat.st_mtime))
    assert "tasks.py changed" in worker.output()
    assert worker.process.poll() is None  # the same process, started again
    assert record.delay("after").get(timeout=30) == "after"
    assert TaskResult.objects.filter(result="after").exists()
