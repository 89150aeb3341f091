"""``--liveness-file``: the file a container's liveness probe checks (tqworker and tqbeat)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from django_tq.liveness import LivenessFile, age, main
from tests.beat.conftest import BeatProcess
from tests.conftest import ROOT, wait_for, worker_env


def test_touch_creates_the_file_and_its_folder_and_refreshes_it_at_most_every_interval(tmp_path):
    path = tmp_path / "run" / "alive"
    liveness = LivenessFile(path, interval=10.0)
    liveness.touch(100.0)
    assert path.exists()
    os.utime(path, (1, 1))  # as if touched long ago
    liveness.touch(105.0)  # within the interval: left alone
    assert os.stat(path).st_mtime == 1
    liveness.touch(110.0)
    assert age(path) < 5
    liveness.remove()
    assert not path.exists()
    liveness.remove()  # twice is fine


def test_the_probe_says_alive_stale_or_missing(tmp_path, capsys):
    path = tmp_path / "alive"
    assert main([str(path)]) == 1
    assert "missing" in capsys.readouterr().err
    path.touch()
    assert main([str(path), "--max-age", "30"]) == 0
    old = time.time() - 60
    os.utime(path, (old, old))
    assert main([str(path), "--max-age", "30"]) == 1
    assert "last touched 60 s ago (> 30 s)" in capsys.readouterr().err


def test_the_probe_runs_as_a_module_without_django(tmp_path):
    path = tmp_path / "alive"
    path.touch()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}  # no DJANGO_SETTINGS_MODULE
    probe = [sys.executable, "-m", "django_tq.liveness", str(path), "--max-age", "30"]
    assert subprocess.run(probe, env=env, timeout=30).returncode == 0
    path.unlink()
    assert subprocess.run(probe, env=env, timeout=30, capture_output=True).returncode == 1


def _fresh(path, seconds: float = 2.0) -> bool:
    seconds_old = age(path)
    return seconds_old is not None and seconds_old < seconds


@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_its_liveness_file_fresh_and_removes_it_when_it_stops(
    tmp_path, queue_name, settings, start_worker
):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    path = tmp_path / "worker-alive"
    worker = start_worker("-P", "solo", "--liveness-file", str(path))
    wait_for(lambda: _fresh(path), 10, what="the liveness file")
    os.utime(path, (1, 1))
    wait_for(lambda: _fresh(path), 5, what="the liveness file touched again")
    assert worker.stop() == 0
    assert not path.exists()


@pytest.mark.django_db(transaction=True)
def test_beat_keeps_its_liveness_file_fresh_and_removes_it_when_it_stops(tmp_path):
    path = tmp_path / "beat-alive"
    beat = BeatProcess(
        ["--max-interval", "1", "--liveness-file", str(path)], worker_env(), tmp_path / "beat.log"
    )
    try:
        beat.wait_ready()
        wait_for(lambda: _fresh(path), 10, what="the liveness file")
        os.utime(path, (1, 1))
        wait_for(lambda: _fresh(path), 5, what="the liveness file touched again")
    finally:
        assert beat.stop() == 0
    assert not path.exists()
