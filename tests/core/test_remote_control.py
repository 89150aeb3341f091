"""Remote control: the mailbox, and tqinspect / tqcontrol against real workers on every transport."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_tq import control, mailbox, states
from django_tq.models import ControlCommand, ControlReply, TaskResult
from tests.conftest import child_pids, command_output, wait_for
from tests.testapp.tasks import slow_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


# -- the mailbox ----------------------------------------------------------------------------------
def test_a_command_reaches_the_workers_it_names_and_only_new_ones():
    old = mailbox.send("ping")
    inbox_a, inbox_b = mailbox.Inbox("a@h"), mailbox.Inbox("b@h")
    command = mailbox.send("ping", destination=["a@h"])
    assert [c.command_id for c in inbox_a.poll()] == [command.command_id]
    assert inbox_b.poll() == []  # not for b; and the one sent before either started is old
    assert inbox_a.poll() == []  # read once
    inbox_a.reply(command, "pong")
    inbox_a.reply(command, "again")  # a second answer is dropped
    replies = mailbox.collect(command, timeout=1, limit=1)
    assert [(r.hostname, r.payload) for r in replies] == [("a@h", "pong")]
    assert old.command_id != command.command_id


def test_expired_commands_are_not_read_and_cleanup_deletes_them():
    inbox = mailbox.Inbox("a@h")
    mailbox.send("ping", ttl=0.01)
    later = timezone.now() + dt.timedelta(seconds=1)
    assert inbox.poll(later) == []
    assert mailbox.delete_expired(later + dt.timedelta(minutes=2)) == 1
    assert not ControlCommand.objects.exists()


def test_collect_returns_what_came_within_the_timeout():
    command = mailbox.send("ping")
    started = timezone.now()
    assert mailbox.collect(command, timeout=0.3) == []
    assert (timezone.now() - started).total_seconds() < 2


def test_with_signing_a_worker_refuses_an_unsigned_or_altered_command(settings, caplog):
    settings.TQ = {**settings.TQ, "SIGNING": True}
    inbox = mailbox.Inbox("a@h")
    signed = mailbox.send("pool_grow", {"n": 1})
    ControlCommand.objects.create(
        command_id="forged",
        name="shutdown",
        created_at=timezone.now(),
        expires_at=timezone.now() + dt.timedelta(seconds=10),
    )
    altered = mailbox.send("pool_grow", {"n": 1})
    ControlCommand.objects.filter(command_id=altered.command_id).update(arguments={"n": 50})
    with caplog.at_level("WARNING", logger="django_tq.control"):
        assert [c.command_id for c in inbox.poll()] == [signed.command_id]
    refused = [
        r.getMessage() for r in caplog.records if "Refused control command" in r.getMessage()
    ]
    assert len(refused) == 2 and "'shutdown' [forged]" in refused[0]


# -- real workers ---------------------------------------------------------------------------------
def test_inspect_and_control_two_busy_workers(broker_url, queue_name, start_worker):
    a = start_worker("-n", "a@test", "-P", "prefork", "-c", "1", "--prefetch-multiplier", "1")
    b = start_worker("-n", "b@test", "-P", "prefork", "-c", "1", "--prefetch-multiplier", "1")
    busy = [slow_record.delay(4, f"busy{i}") for i in range(2)]
    wait_for(
        lambda: TaskResult.objects.filter(state=states.STARTED).count() == 2, 30, what="both busy"
    )
    # both answer while each one's only child runs a task: the parent answers
    assert control.inspect(timeout=5).ping() == {"a@test": "pong", "b@test": "pong"}
    assert control.inspect(["b@test"], timeout=5).ping() == {"b@test": "pong"}
    active = control.inspect(timeout=5).active()
    running = {task["id"]: (host, task) for host, tasks in active.items() for task in tasks}
    assert set(running) == {r.id for r in busy}
    for host, task in running.values():
        worker = a if host == "a@test" else b
        assert task["name"] == "tests.testapp.tasks.slow_record"
        assert task["pid"] in child_pids(worker.pid) and task["runtime"] >= 0
        assert "busy" in task["args"]
    stats = control.inspect(["a@test"], timeout=5).stats()["a@test"]
    assert stats["concurrency"] == 1 and stats["pool"] == "prefork"
    assert [c["pid"] for c in stats["children"]] == child_pids(a.pid)
    assert stats["broker"]["ok"] is True and "password" not in json.dumps(stats)
    assert queue_name in control.inspect(["a@test"]).active_queues()["a@test"]
    assert "tests.testapp.tasks.slow_record" in control.inspect(["a@test"]).registered()["a@test"]

    out = command_output("tqcontrol", "pool_grow", "1", "-d", "a@test", "--timeout", "5")
    assert "-> a@test: pool size 2" in out
    wait_for(lambda: len(child_pids(a.pid)) == 2, 20, what="a second child")
    assert control.inspect(["a@test"], timeout=5).stats()["a@test"]["concurrency"] == 2
    assert "pool size 1" in command_output(
        "tqcontrol", "pool_shrink", "-d", "a@test", "--timeout", "5"
    )
    wait_for(lambda: len(child_pids(a.pid)) == 1, 20, what="back to one child")

    assert "-> b@test: warm shutdown" in command_output(
        "tqcontrol", "shutdown", "-d", "b@test", "-t", "5"
    )
    assert b.process.wait(30) == 0
    assert [r.get(timeout=30) for r in busy] == ["busy0", "busy1"]  # nothing lost
    assert set(control.inspect(timeout=3).ping()) == {"a@test"}


def test_tqinspect_prints_tables_json_and_who_did_not_answer(queue_name, settings, start_worker):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    start_worker("-n", "only@test", "-P", "solo")
    out = command_output("tqinspect", "ping", "-d", "only@test,ghost@test", "--timeout", "1")
    assert "-> only@test: pong" in out and "No reply from: ghost@test" in out
    assert (
        json.loads(command_output("tqinspect", "stats", "--json", "-d", "only@test"))["only@test"][
            "pool"
        ]
        == "solo"
    )
    with pytest.raises(SystemExit):  # an error reply exits 1, after printing it
        call_command("tqcontrol", "pool_grow", "-d", "only@test", stdout=(out := io.StringIO()))
    assert "error: the solo pool runs one consumer" in out.getvalue()


def test_tqinspect_exits_1_when_no_worker_answers():
    with pytest.raises(SystemExit) as exit_:
        command_output("tqinspect", "ping", "--timeout", "0.2")
    assert exit_.value.code == 1


def test_a_signed_fleet_ignores_a_forged_command(queue_name, settings, start_worker):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name, "SIGNING": True}
    worker = start_worker("-n", "signed@test", "-P", "solo")
    assert control.inspect(timeout=5).ping() == {"signed@test": "pong"}  # signed: answered
    ControlCommand.objects.create(
        command_id="forged",
        name="shutdown",
        created_at=timezone.now(),
        expires_at=timezone.now() + dt.timedelta(seconds=10),
    )
    wait_for(lambda: "Refused control command 'shutdown' [forged]" in worker.output(), 10)
    assert not ControlReply.objects.filter(command__command_id="forged").exists()
    assert worker.process.poll() is None


def test_tqcontrol_revoke_and_terminate_reach_a_running_task(queue_name, settings, start_worker):
    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    start_worker("-P", "prefork", "-c", "1")
    running = slow_record.delay(30, "long")
    wait_for(lambda: TaskResult.objects.filter(task_id=running.id, state=states.STARTED).exists())
    out = command_output("tqcontrol", "terminate", running.id, "--signal", "SIGKILL")
    assert f"terminate with SIGKILL: {running.id}" in out
    wait_for(
        lambda: TaskResult.objects.get(task_id=running.id).state == states.REVOKED,
        30,
        what="revoked",
    )


def test_add_and_cancel_consumer_change_the_queues_live(queue_name, settings, start_worker):
    from django_tq.models import WorkerState
    from tests.testapp.tasks import record

    settings.TQ = {**settings.TQ, "DEFAULT_QUEUE": queue_name}
    other = f"{queue_name}-other"
    start_worker("-n", "queues@test", "-P", "prefork", "-c", "1")
    waiting = record.apply_async(("elsewhere",), queue=other)
    out = command_output("tqcontrol", "add_consumer", other, "-d", "queues@test", "-t", "5")
    assert f"-> queues@test: consuming {other}" in out
    assert waiting.get(timeout=30) == "elsewhere"  # the new queue is consumed
    assert control.inspect(["queues@test"], timeout=5).active_queues() == {
        "queues@test": [queue_name, other]
    }
    wait_for(lambda: WorkerState.objects.get(hostname="queues@test").queues == [queue_name, other])
    assert "no longer consuming" in command_output(
        "tqcontrol", "cancel_consumer", other, "-d", "queues@test"
    )
    with pytest.raises(SystemExit):
        call_command(
            "tqcontrol",
            "cancel_consumer",
            queue_name,
            "-d",
            "queues@test",
            stdout=(out_ := io.StringIO()),
        )
    assert "only queue" in out_.getvalue()
    assert record.delay("home").get(timeout=30) == "home"
