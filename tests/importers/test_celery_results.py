"""``tqimport celery-results``: results stored by Celery's own django-celery-results backend,
imported through its models and through plain SQL; states, values, pickles, groups, a second
run, an interrupted run, dry runs, and the command's progress bar in a real process."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import os
import pty
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_tq import AsyncResult, GroupResult, states
from django_tq.importers import batches, celery_results
from django_tq.importers.progress import ProgressBar
from django_tq.importers.report import Action, Report
from django_tq.models import GroupResult as GroupResultRow
from django_tq.models import TaskResult
from tests.conftest import ROOT, worker_env
from tests.importers.conftest import celery_model

pytestmark = [pytest.mark.db, pytest.mark.django_version]

UTC = dt.UTC
ADD = "tests.testapp.tasks.add"
CREATED = dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def dcr(name: str) -> Any:
    return celery_model("django_celery_results", name)


def backend(serializer: str = "json") -> Any:
    """Return Celery's django-celery-results backend, as a Celery project configures it."""
    from celery import Celery
    from django_celery_results.backends import DatabaseBackend

    app = Celery("tq-import-tests", set_as_current=False)
    app.conf.result_extended = True
    app.conf.result_serializer = serializer
    app.conf.accept_content = app.conf.result_accept_content = ["json", "pickle"]
    return DatabaseBackend(app=app, url="django-db")


def request(args: Any = (2, 3), kwargs: Any = None, **extra: Any) -> Any:
    """Return the request Celery's worker passes the backend (protocol 2: argsrepr)."""
    from celery.app.task import Context

    kwargs = kwargs or {}
    return Context(
        task=ADD,
        args=list(args),
        kwargs=kwargs,
        argsrepr=repr(tuple(args)),
        kwargsrepr=repr(kwargs),
        hostname="celery@worker-1",
        **extra,
    )


class Sentinel:
    """Unpickling this creates a file: the import must never do it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (str(self.path), "w"))


def failure(message: str) -> tuple[Exception, str]:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return exc, traceback.format_exc()


def make_results(sentinel: Path) -> None:
    """Results of every kind, stored by Celery's backend (and two by its model, the old way)."""
    store = backend()
    when = dt.datetime(2024, 3, 1, 12, 0, 5, tzinfo=UTC)
    value = {"when": when, "amount": decimal.Decimal("1.50")}
    store.store_result("t-success", value, states.SUCCESS, request=request(periodic_task_name="m"))
    exc, text = failure("boom")
    store.store_result("t-failure", exc, states.FAILURE, traceback=text, request=request())
    store.store_result("t-progress", {"step": 2}, "PROGRESS", request=request())
    store.store_result("t-started", None, states.STARTED, request=request())
    store.store_result("t-pending", None, states.PENDING, request=request())
    store.store_result("t-dates", None, states.SUCCESS, request=request((), {"day": when.date()}))
    backend("pickle").store_result("t-pickled", Sentinel(sentinel), states.SUCCESS)
    model = dcr("TaskResult")
    for task_id, args, kwargs in [("t-old", "(1, 'a')", "{'b': 2}"), ("t-json", "[1]", "{}")]:
        model.objects.create(
            task_id=task_id,
            task_name=ADD,
            status=states.SUCCESS,
            content_type="application/json",
            content_encoding="utf-8",
            result="3",
            task_args=args,
            task_kwargs=kwargs,
        )
    from celery.result import AsyncResult as CeleryResult
    from celery.result import GroupResult as CeleryGroup

    members = [CeleryResult("t-success"), CeleryResult("t-failure")]
    store.save_group("g-1", CeleryGroup("g-1", members, app=store.app))
    model.objects.filter(task_id="t-success").update(date_created=CREATED)


def outcomes(report: Report) -> dict[str, tuple[Action, str]]:
    return {
        row.key: (row.action, "; ".join(filter(None, (row.reason, *row.notes))))
        for row in report.rows
    }


@pytest.mark.django_db
def test_results_of_every_kind_are_imported(
    celery_apps: Callable[[], Any], read_via: Callable[..., Any], tmp_path: Path
) -> None:
    sentinel = tmp_path / "unpickled"
    with celery_apps():
        make_results(sentinel)
        source = {row.task_id: row for row in dcr("TaskResult").objects.all()}
    report = read_via(celery_results.import_results)
    assert report.count(Action.IMPORTED, "task result") == 9
    assert report.count(Action.IMPORTED, "group result") == 1
    assert report.total == 10

    success = AsyncResult("t-success")
    assert success.get(timeout=1) == {
        "when": dt.datetime(2024, 3, 1, 12, 0, 5, tzinfo=UTC),
        "amount": decimal.Decimal("1.50"),
    }
    row = TaskResult.objects.get(task_id="t-success")
    assert (row.task_name, row.state, row.args, row.kwargs) == (ADD, states.SUCCESS, [2, 3], {})
    assert row.worker == "celery@worker-1"
    assert row.meta == {
        "imported_from": "django-celery-results",
        "celery_state": "SUCCESS",
        "periodic_task_name": "m",
        "celery_meta": {"children": []},
    }
    assert row.date_created == CREATED  # as it was, not the time of the import
    assert row.date_done == source["t-success"].date_done

    with pytest.raises(ValueError, match=r"^boom$"):
        AsyncResult("t-failure").get(timeout=1)
    assert TaskResult.objects.get(task_id="t-failure").traceback.startswith("Traceback")

    progress = TaskResult.objects.get(task_id="t-progress")
    assert (progress.state, progress.result, progress.date_done) == ("PROGRESS", {"step": 2}, None)
    assert TaskResult.objects.get(task_id="t-started").state == states.STARTED
    pending = TaskResult.objects.get(task_id="t-pending")
    assert (pending.state, pending.meta["celery_state"]) == (states.QUEUED, "PENDING")

    dates = TaskResult.objects.get(task_id="t-dates")
    assert dates.args == [] and dates.kwargs is None
    assert dates.meta["task_kwargs_text"] == "{'day': datetime.date(2024, 3, 1)}"
    assert outcomes(report)["t-dates"] == (
        Action.IMPORTED,
        "arguments kept as text in meta: neither JSON nor a repr of literals",
    )
    old = TaskResult.objects.get(task_id="t-old")
    assert (old.args, old.kwargs, old.result) == ([1, "a"], {"b": 2}, 3)
    json_args = TaskResult.objects.get(task_id="t-json")
    assert (json_args.args, json_args.kwargs) == ([1], {})

    pickled = TaskResult.objects.get(task_id="t-pickled")
    assert pickled.result == (
        "[not imported: a pickled result (application/x-python-serialize); django_tq never "
        "unpickles]"
    )
    assert report.remarks["pickled result replaced by a note"] == 1
    assert not sentinel.exists()

    group = GroupResult.restore("g-1")
    assert group is not None and [member.id for member in group.results] == [
        "t-success",
        "t-failure",
    ]
    assert group.failed() and not group.successful()


@pytest.mark.django_db
def test_a_second_run_changes_nothing_then_follows_what_changed_there(
    celery_apps: Callable[[], Any], read_via: Callable[..., Any], tmp_path: Path
) -> None:
    with celery_apps():
        make_results(tmp_path / "unpickled")
    read_via(celery_results.import_results)
    again = read_via(celery_results.import_results)
    assert not again.changed_anything
    assert again.count(Action.UNCHANGED) == again.total == 10
    with celery_apps():  # a task that was running at the first import has finished since
        backend().store_result("t-started", 5, states.SUCCESS, request=request())
    found = outcomes(read_via(celery_results.import_results))
    assert found["t-started"] == (
        Action.UPDATED,
        "changed: state, result, meta, date_done",
    )
    assert AsyncResult("t-started").get(timeout=1) == 5


@pytest.mark.django_db
def test_an_interrupted_import_goes_on_where_it_stopped(celery_apps: Callable[[], Any]) -> None:
    with celery_apps():
        for number in range(5):
            backend().store_result(f"t-{number}", number, states.SUCCESS, request=request())

    def interrupt(done: int, total: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        celery_results.import_results(batch_size=2, progress=interrupt)
    assert TaskResult.objects.count() == 4  # two batches written
    report = celery_results.import_results(batch_size=2)
    assert report.count(Action.UNCHANGED) == 4 and report.count(Action.IMPORTED) == 1
    assert sorted(TaskResult.objects.values_list("result", flat=True)) == [0, 1, 2, 3, 4]


@pytest.mark.django_db
def test_a_dry_run_writes_nothing(celery_apps: Callable[[], Any], tmp_path: Path) -> None:
    with celery_apps():
        make_results(tmp_path / "unpickled")
    out = io.StringIO()
    call_command("tqimport", "celery-results", "--dry-run", stdout=out, stderr=io.StringIO())
    lines = out.getvalue().splitlines()
    assert "  pickled result replaced by a note: 1" in lines
    assert lines[-2:] == [
        "Dry run, nothing written: celery-results: 9 task results: 9 imported, 0 updated, "
        "0 unchanged, 0 skipped, 0 failed.",
        "Dry run, nothing written: celery-results: 1 group result: 1 imported, 0 updated, "
        "0 unchanged, 0 skipped, 0 failed.",
    ]
    assert not TaskResult.objects.exists() and not GroupResultRow.objects.exists()


@pytest.mark.django_db
def test_a_result_django_tq_recorded_itself_is_left_alone(celery_apps: Callable[[], Any]) -> None:
    TaskResult.objects.create(task_id="t-1", task_name=ADD, state=states.SUCCESS, result=3)
    with celery_apps():
        backend().store_result("t-1", 99, states.SUCCESS, request=request())
    found = outcomes(celery_results.import_results())
    assert found["t-1"] == (Action.SKIPPED, "django_tq recorded a task result with this id itself")
    assert TaskResult.objects.get(task_id="t-1").result == 3


@pytest.mark.django_db
def test_a_bad_row_fails_alone_and_the_command_says_why(celery_apps: Callable[[], Any]) -> None:
    with celery_apps():
        backend().store_result("t-1", 1, states.SUCCESS, request=request())
        dcr("GroupResult").objects.create(
            group_id="g-bad",
            content_type="application/json",
            content_encoding="utf-8",
            result='{"not": "a tuple"}',
        )
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"1 row\(s\) could not be imported"):
        call_command("tqimport", "celery-results", stdout=out, stderr=io.StringIO())
    assert "  failed     g-bad — not a group result tuple: {'not': 'a tuple'}" in out.getvalue()
    assert TaskResult.objects.filter(task_id="t-1").exists()


@pytest.mark.django_db
def test_a_batch_the_database_refuses_is_retried_row_by_row(
    celery_apps: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with celery_apps():
        for number in range(3):
            backend().store_result(f"t-{number}", number, states.SUCCESS, request=request())
    persist = batches._persist
    calls = []

    def racing(*args: Any) -> None:
        if not calls:  # a worker records t-1 between the comparison and the insert
            TaskResult.objects.create(task_id="t-1", task_name=ADD, state=states.STARTED)
        calls.append(args)
        persist(*args)

    monkeypatch.setattr(batches, "_persist", racing)
    found = outcomes(celery_results.import_results())
    assert found["t-1"][0] == Action.SKIPPED
    assert TaskResult.objects.get(task_id="t-1").state == states.STARTED
    assert set(TaskResult.objects.values_list("task_id", flat=True)) == {"t-0", "t-1", "t-2"}


@pytest.mark.django_db
def test_results_the_cleanup_would_delete_are_announced(
    celery_apps: Callable[[], Any], settings: Any
) -> None:
    with celery_apps():
        backend().store_result("t-old", 1, states.SUCCESS, request=request())
        backend().store_result("t-new", 2, states.SUCCESS, request=request())
        dcr("TaskResult").objects.filter(task_id="t-old").update(
            date_done=dt.datetime(2020, 1, 1, tzinfo=UTC)
        )
    report = celery_results.import_results(dry_run=True)
    assert report.warnings == [
        "1 of these results finished more than TQ['RESULT_EXPIRES'] (7 days, 0:00:00) ago: the "
        "worker's cleanup deletes them. Set TQ['RESULT_EXPIRES'] to None (or longer) to keep them."
    ]
    settings.TQ = {**settings.TQ, "RESULT_EXPIRES": None}
    assert celery_results.import_results(dry_run=True).warnings == []


def test_the_progress_bar_draws_one_line() -> None:
    drawn: list[str] = []
    clock = iter([0.0, 2.0, 2.1, 4.0])
    bar = ProgressBar(drawn.append, width=10, clock=lambda: next(clock))
    bar(500, 1000)
    bar(600, 1000)  # too soon after the last redraw
    bar(1000, 1000)
    bar.close()
    assert [text.rstrip(" ") for text in drawn] == [
        "\r[#####-----]  50%  500/1,000 rows  250/s",
        "\r[##########] 100%  1,000/1,000 rows  250/s",
        "\n",
    ]


@pytest.mark.django_db(transaction=True)
def test_the_command_draws_a_bar_on_a_terminal_and_a_summary_otherwise(
    celery_tables: None, celery_apps: Callable[[], Any]
) -> None:
    with celery_apps():
        for number in range(3):
            backend().store_result(f"t-{number}", number, states.SUCCESS, request=request())
    command = [sys.executable, "-m", "django", "tqimport", "celery-results", "--batch-size", "1"]
    try:
        leader, follower = pty.openpty()
        with os.fdopen(leader, "rb", buffering=0) as terminal:
            process = subprocess.Popen(
                [*command, "--database", "other", "--dry-run"],
                cwd=ROOT,
                env=worker_env(),
                stdout=subprocess.PIPE,
                stderr=follower,
            )
            os.close(follower)
            out, _ = process.communicate(timeout=60)
            drawn = _read_all(terminal)
        assert process.returncode == 0, drawn
        assert "\r[" in drawn and "100%  3/3 rows" in drawn
        assert (
            out.decode()
            .splitlines()[-1]
            .startswith("Dry run, nothing written: celery-results: 3 task results: 3 imported")
        )
        piped = subprocess.run(command, cwd=ROOT, env=worker_env(), capture_output=True, timeout=60)
        assert piped.returncode == 0, piped.stderr
        assert b"\r" not in piped.stderr
        assert piped.stdout.decode().splitlines()[-1] == (
            "celery-results: 3 task results: 3 imported, 0 updated, 0 unchanged, 0 skipped, "
            "0 failed."
        )
        assert TaskResult.objects.count() == 3
    finally:
        dcr("TaskResult").objects.all().delete()


def _read_all(terminal: Any) -> str:
    chunks = []
    while True:
        try:
            chunk = terminal.read(4096)
        except OSError:  # the other end closed (Linux: EIO)
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.django_db
def test_thousands_of_results_in_batches(celery_apps: Callable[[], Any]) -> None:
    with celery_apps():
        dcr("TaskResult").objects.bulk_create(
            dcr("TaskResult")(
                task_id=f"t-{number:05d}",
                task_name=ADD,
                status=states.SUCCESS,
                content_type="application/json",
                content_encoding="utf-8",
                result=str(number),
                task_args="[1, 2]",
                task_kwargs="{}",
            )
            for number in range(2500)
        )
    seen = []
    report = celery_results.import_results(progress=lambda done, total: seen.append(done))
    assert seen == [1000, 2000, 2500]
    assert report.count(Action.IMPORTED) == 2500 and report.rows == []
    assert TaskResult.objects.filter(state=states.SUCCESS, args=[1, 2]).count() == 2500
    assert TaskResult.objects.get(task_id="t-02499").result == 2499
    assert celery_results.import_results().count(Action.UNCHANGED) == 2500


@pytest.mark.django_db
def test_no_tables_is_said_plainly(celery_tables: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(celery_results, "APP", "celery_results_elsewhere")
    with pytest.raises(CommandError) as error:
        call_command("tqimport", "celery-results", stdout=io.StringIO())
    assert str(error.value) == (
        "No django-celery-results results in database 'default': its table "
        "celery_results_elsewhere_taskresult does not exist there (celery_results_elsewhere is "
        "not installed, so the table was looked up). Pass --database to read another database."
    )


@pytest.mark.django_db
def test_ctrl_c_keeps_what_was_written_and_says_how_to_go_on(
    celery_apps: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with celery_apps():
        for number in range(3):
            backend().store_result(f"t-{number}", number, states.SUCCESS, request=request())
    import_batch = celery_results.import_batch
    batches = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        batches.append(args)
        if len(batches) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second batch is read
        return import_batch(*args, **kwargs)

    monkeypatch.setattr(celery_results, "import_batch", interrupted)
    with pytest.raises(CommandError) as error:
        call_command("tqimport", "celery-results", "--batch-size", "1", stdout=io.StringIO())
    assert str(error.value) == (
        "Interrupted. Every batch written is kept: run the same command again to go on where "
        "it stopped."
    )
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["t-0"]
    monkeypatch.setattr(celery_results, "import_batch", import_batch)
    out = io.StringIO()
    call_command("tqimport", "celery-results", "--batch-size", "1", stdout=out)
    assert out.getvalue().splitlines()[-1] == (
        "celery-results: 3 task results: 2 imported, 0 updated, 1 unchanged, 0 skipped, 0 failed."
    )
