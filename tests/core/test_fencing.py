"""Fencing: a worker cut off past its lease cannot overwrite the run that took its task over.

End to end across hosts: ``tests/faults/test_network.py`` (a partitioned worker). Here, the two
fences on their own: the result write (``store(fenced=True)``), and what ``record()`` does when it
is refused — nothing that would follow the stale outcome happens.
"""

from __future__ import annotations

import pytest

from django_tq import states
from django_tq.exceptions import Superseded
from django_tq.execution import execute, record
from django_tq.message import TaskMessage
from django_tq.models import QueueMessage, TaskResult
from django_tq.result_backends import get_backend
from tests.testapp.tasks import add, tsum

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db]


def _message(task_id: str, **fields) -> TaskMessage:
    return TaskMessage(id=task_id, task=add.name, args=(2, 3), queue="default", **fields)


def test_a_fenced_write_is_refused_once_a_newer_delivery_started_the_task():
    backend = get_backend()
    message = _message("fenced-1")
    assert backend.mark_started(message, worker="stale@a", delivery_count=1)
    assert backend.mark_started(message, worker="current@b", delivery_count=2)  # took it over
    with pytest.raises(Superseded, match="newer delivery while delivery 1 ran"):
        backend.store(
            message, states.SUCCESS, result=5, worker="stale@a", delivery_count=1, fenced=True
        )
    backend.store(
        message, states.SUCCESS, result=5, worker="current@b", delivery_count=2, fenced=True
    )
    row = TaskResult.objects.get(task_id="fenced-1")
    assert (row.state, row.worker, row.delivery_count) == (states.SUCCESS, "current@b", 2)
    # and once the newer delivery finished, the stale one still cannot overwrite it
    with pytest.raises(Superseded):
        backend.store(message, states.FAILURE, worker="stale@a", delivery_count=1, fenced=True)
    assert TaskResult.objects.get(task_id="fenced-1").state == states.SUCCESS


def test_an_unfenced_write_and_a_first_write_are_recorded_as_before():
    backend = get_backend()
    message = _message("fenced-2")
    backend.store(message, states.SUCCESS, result=5, worker="w@a", delivery_count=1, fenced=True)
    assert TaskResult.objects.get(task_id="fenced-2").state == states.SUCCESS  # no row: created
    backend.store(message, states.FAILURE, worker="w@a", delivery_count=1)  # unfenced: as ever
    assert TaskResult.objects.get(task_id="fenced-2").state == states.FAILURE


def test_a_superseded_outcome_is_dropped_with_everything_that_would_follow_it():
    backend = get_backend()
    # a chain step: its success would send the next step
    nxt = tsum.s().to_dict()
    message = _message("fenced-3", chain=(nxt,))
    assert backend.mark_started(message, worker="stale@a", delivery_count=1)
    assert backend.mark_started(message, worker="current@b", delivery_count=2)
    outcome = execute(message, hostname="stale@a", delivery_count=1)
    assert outcome.state == states.SUCCESS
    assert record(message, outcome, worker="stale@a", delivery_count=1, fenced=True) is False
    assert TaskResult.objects.get(task_id="fenced-3").state == states.STARTED  # still b's run
    assert not QueueMessage.objects.exists()  # no next step sent by the stale run
    assert record(message, outcome, worker="current@b", delivery_count=2, fenced=True) is True
    assert QueueMessage.objects.count() == 1  # the current run sends it, once
