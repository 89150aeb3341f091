"""A message that comes back: how many times it was delivered, and whether its first run died."""

from __future__ import annotations

import logging
from typing import Any

from django.db import close_old_connections

from django_tq import message as wire_format
from django_tq import serialization, states
from django_tq.broker.delivery import Delivery
from django_tq.exceptions import WorkerLostError
from django_tq.execution import Outcome, record
from django_tq.message import TaskMessage
from django_tq.result_backends import get_backend
from django_tq.tasks import Task

logger = logging.getLogger("django_tq.worker")


def records_starts(task: Task[Any, Any], *, ignore_result: bool, track_started: bool) -> bool:
    """Return whether a run of ``task`` records STARTED with its delivery count on the result
    row — what ``MAX_DELIVERIES`` is counted from where the transport keeps no count (AMQP).

    ``track_started`` is ``TRACK_STARTED``; ``ignore_result`` the message's own.
    """
    return track_started and not ignore_result and task.track_started is not False


def count_deliveries(delivery: Delivery) -> int:
    """Return the count of a redelivered message from a transport that keeps none (AMQP).

    A delivery that started the task and died left it ``STARTED`` with its count: this one
    is the next. A message that was only prefetched keeps the transport's answer.
    """
    task_id = wire_format.read_id(delivery.headers)
    try:
        data = get_backend().get(task_id) if task_id else None
    except Exception:
        logger.warning("Reading the delivery count of %s failed", task_id, exc_info=True)
        close_old_connections()
        return delivery.delivery_count
    if data is None or data.state != states.STARTED:
        return delivery.delivery_count
    return max(data.delivery_count, 1) + 1


def fail_if_lost(delivery: Delivery, message: TaskMessage, *, worker: str) -> bool:
    """Fail a redelivered task whose earlier run died (``reject_on_worker_lost=False``).

    A task still ``STARTED`` when its message comes back was started by a delivery that never
    finished: its worker died. It is recorded as FAILURE with ``WorkerLostError`` (its
    errbacks run) and acked instead of run again; return whether it was. Only redeliveries pay
    for the read.
    """
    data = get_backend().get(message.id)
    if data is None or data.state != states.STARTED:
        return False
    error = WorkerLostError(f"The worker running {message.task}[{message.id}] died.")
    outcome = Outcome(
        state=states.FAILURE, result=serialization.exception_to_data(error), exception=error
    )
    record(message, outcome, worker=worker, delivery_count=delivery.delivery_count)
    delivery.ack()
    logger.error("Task %s[%s] failed: its worker died", message.task, message.id)
    return True
