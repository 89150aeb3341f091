"""Keep a message that cannot run in the ``DeadLetter`` table, with the reason, instead of losing it."""

from __future__ import annotations

import logging
from typing import Any

from django.db import router, transaction

from django_tq import message as wire_format
from django_tq import states, unique, workflow
from django_tq.broker.delivery import Delivery
from django_tq.message import TaskMessage
from django_tq.models import DeadLetter
from django_tq.result_backends import get_backend
from django_tq.serialization import to_jsonable

logger = logging.getLogger("django_tq.worker")


def _jsonable_headers(headers: Any) -> Any:
    try:
        return to_jsonable(headers)
    except Exception:
        return {"unreadable": repr(headers)[:2000]}


def dead_letter(delivery: Delivery, reason: str, *, worker: str) -> DeadLetter:
    """Record ``delivery`` as dead with ``reason``; mark its result DEAD when its id is readable.

    One transaction where the results share the dead letters' database: if marking the result
    fails (its table gone), the dead letter is not kept either, so the message, given back to
    its queue by the consumer, is not dead-lettered once per attempt.
    """
    with transaction.atomic(using=router.db_for_write(DeadLetter)):
        letter = _record(delivery, reason, worker=worker)
    logger.error(
        "Dead-lettered message %s from queue %r: %s",
        letter.task_id or "(no id)",
        delivery.queue,
        reason,
    )
    return letter


def _record(delivery: Delivery, reason: str, *, worker: str) -> DeadLetter:
    headers = delivery.headers
    task_id = wire_format.read_id(headers)
    task_name = headers.get("task") if isinstance(headers, dict) else None
    letter = DeadLetter.objects.create(
        task_id=task_id,
        task_name=str(task_name or "")[:255],
        queue=delivery.queue,
        reason=reason,
        content_type=delivery.content_type[:200],
        headers=_jsonable_headers(headers),
        payload=delivery.raw_payload,
        worker=worker,
    )
    if task_id:
        message = TaskMessage(id=task_id, task=str(task_name or ""), queue=delivery.queue)
        get_backend().store(message, states.DEAD, result={"reason": reason}, worker=worker)
        unique_key = wire_format.read_unique_key(headers)
        if unique_key is not None:
            unique.release_key(unique_key, task_id)
        _fail_workflow(headers, message, reason)
    return letter


def _fail_workflow(headers: dict[str, Any], message: TaskMessage, reason: str) -> None:
    """A dead task of a workflow fails its chord and the rest of its chain (never stuck)."""
    try:
        canvas = wire_format.read_canvas(headers)
    except Exception:
        return  # headers we cannot read: nothing to follow
    if canvas:
        ids = {"root_id": headers.get("root_id"), "group_id": headers.get("group_id")}
        workflow.dead(message.with_changes(**ids, **canvas), reason)
