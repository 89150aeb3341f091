"""What follows a task's outcome in a workflow: the next chain step, callbacks, errbacks, chords.

``execution.record`` calls :func:`settle` with a function that stores the outcome. Outside a
chord it stores, then applies what follows. A chord's header task stores its result and
decrements the chord's ``ChordCounter`` in one transaction, marking its row ``chord_counted`` so a
redelivered copy never counts twice; the task that brings the counter to zero sends the body (with
the header results, in order; ``None`` for a task that raised ``Ignore``) in that same
transaction, so exactly once. The first header task to fail sets the counter to FAILURE instead:
the body never runs, and is recorded as failed with the header's error, which runs the body's
errbacks once. Nothing polls.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import replace as replace_outcome
from typing import Any

from django.db import connections, router, transaction
from django.db.models import F
from django.utils import timezone

from django_tq import serialization, states
from django_tq.canvas import Placement, Signature, chain, chord, group, links_of, signature, task_of
from django_tq.context import build_request
from django_tq.exceptions import TaskError, TaskRevokedError
from django_tq.message import TaskMessage
from django_tq.models import ChordCounter, GroupResult, TaskResult
from django_tq.outcome import Outcome
from django_tq.registry import registry
from django_tq.result_backends import DatabaseBackend, get_backend

logger = logging.getLogger("django_tq.workflow")

#: the outcome state of a task that called ``self.replace(sig)`` (nothing is stored)
REPLACED = "REPLACED"
#: the outcome state of a task that raised ``Ignore`` (nothing is stored)
IGNORED = "IGNORED"
FAILED = (states.FAILURE, states.REVOKED)


def settle(message: TaskMessage, outcome: Outcome, write: Callable[[], None]) -> None:
    """Store ``outcome`` with ``write`` (counting it towards a chord), then apply what follows."""
    if outcome.state == REPLACED:
        write()
        replace(message, outcome.replacement or {}, eager=False)
        return
    failed_chord = False
    if _counts(message, outcome):
        failed_chord = _count(message, outcome, write)
    else:
        write()
    follow(message, outcome, eager=False)
    if failed_chord:
        _fail_body(message, outcome)
    if message.group_id and outcome.state in states.READY_STATES:
        _mark_group_done(message.group_id)


def follows(message: TaskMessage) -> bool:
    """Return whether settling ``message``'s outcome may do more than write it: a chain's
    next step or the rest failed, callbacks or errbacks, a chord count, a group's date."""
    return bool(
        message.chain or message.chord or message.link or message.link_error or message.group_id
    )


def _counts(message: TaskMessage, outcome: Outcome) -> bool:
    """Return whether this outcome finishes a header task of a chord (the chain's last step)."""
    if not message.chord:
        return False
    if outcome.state in FAILED:
        return True
    # An ignored header task counts with no result, so its chord never waits for it forever.
    return outcome.state in (states.SUCCESS, IGNORED) and not message.chain


def follow(message: TaskMessage, outcome: Outcome, *, eager: bool) -> None:
    """Apply the callbacks, or errbacks, and the next chain step of a finished task."""
    place = Placement(parent_id=message.id, root_id=message.root_id or message.id)
    if not eager and (message.chain or message.link):
        place = Placement(parent_id=place.parent_id, root_id=place.root_id, extra=_owner(message))
    if outcome.state == states.SUCCESS:
        for link in message.link:
            _apply(signature(link), (outcome.result,), place, eager=eager)
        if message.chain and not eager:
            step = signature(message.chain[0])
            after = Placement(
                parent_id=message.id,
                root_id=place.root_id,
                group_id=message.group_id,
                chord=message.chord,
                chain=message.chain[1:],
                extra=place.extra,
            )
            step.send((outcome.result,), {}, after)
    elif outcome.state in FAILED:
        if outcome.state == states.FAILURE:
            _errbacks(message, outcome, place, eager=eager)
        _fail_rest(message, outcome)


def _owner(message: TaskMessage) -> dict[str, Any]:
    """Return the ``owner`` option of what ``message``'s task applies: the owner of its result."""
    if not isinstance(get_backend(), DatabaseBackend):
        return {}
    rows = TaskResult.objects.using(router.db_for_read(TaskResult) or "default")
    owner_id = rows.filter(task_id=message.id).values_list("owner_id", flat=True).first()
    return {"owner": owner_id} if owner_id is not None else {}


def _apply(sig: Signature, args: tuple[Any, ...], place: Placement, *, eager: bool) -> Any:
    if eager:
        return sig.apply(args)
    frozen = sig.freeze()
    frozen.check()
    frozen.send(args, {}, place)
    return frozen.result()


def _error(outcome: Outcome) -> BaseException:
    if outcome.exception is not None:
        return outcome.exception
    if serialization.is_exception_data(outcome.result):
        return serialization.exception_from_data(outcome.result)
    return TaskRevokedError(str(outcome.result))


def _takes_request(sig: Signature) -> bool:
    """Return whether an errback is new-style: ``errback(request, exc, traceback, *args)``."""
    if sig.kind != "task" or sig.task not in registry:
        return False
    try:
        registry.get(sig.task).signature.bind(None, None, None, *sig.args, **sig.kwargs)
    except TypeError:
        return False
    return True


def _errbacks(message: TaskMessage, outcome: Outcome, place: Placement, *, eager: bool) -> None:
    """Call each errback: new-style ones inline with (request, exc, traceback) as in Celery;
    old-style ones (taking one argument) are applied with the failed task's id; immutable ones
    (``.si()``) are applied with exactly their own arguments."""
    if not message.link_error:
        return
    request = build_request(message, is_eager=eager)
    error = _error(outcome)
    for entry in message.link_error:
        errback = signature(entry)
        if errback.immutable:
            _apply(errback, (), place, eager=eager)
        elif _takes_request(errback):
            try:
                registry.get(errback.task)(
                    request, error, outcome.traceback, *errback.args, **errback.kwargs
                )
            except Exception:
                logger.exception("Errback %s of task %s failed", errback.task, message.id)
        else:
            _apply(errback, (message.id,), place, eager=eager)


def frozen_tasks(sig: Signature) -> list[tuple[str, str]]:
    """Return ``(task id, task name)`` of every task in a frozen signature."""
    if isinstance(sig, chain | group):
        return [pair for member in sig.tasks for pair in frozen_tasks(member)]
    if isinstance(sig, chord):
        return [*frozen_tasks(sig.header), *(frozen_tasks(sig.body) if sig.body else [])]
    return [(sig.id, sig.task)] if sig.options.get("task_id") else []


def _fail_rest(message: TaskMessage, outcome: Outcome) -> None:
    """Record the chain steps that will never run as failed with the error (no result hangs)."""
    for entry in message.chain:
        _store_failed(signature(entry), message, outcome)


def _store_failed(sig: Signature, message: TaskMessage, outcome: Outcome) -> None:
    backend = get_backend()
    data = serialization.exception_to_data(_error(outcome))
    for task_id, name in frozen_tasks(sig):
        never = TaskMessage(id=task_id, task=name, parent_id=message.id, root_id=message.root_id)
        backend.store(never, states.FAILURE, result=data, traceback=outcome.traceback)


def dead(message: TaskMessage, reason: str) -> None:
    """Fail what waits for a dead-lettered task (its chord, its chain), which will never run."""
    error = TaskError(states.DEAD, f"Task {message.id} was dead-lettered: {reason}")
    outcome = Outcome(
        state=states.FAILURE, result=serialization.exception_to_data(error), exception=error
    )
    settle(message, outcome, lambda: None)  # the DEAD row is already written


# -- chords ---------------------------------------------------------------------------------------
def _count(message: TaskMessage, outcome: Outcome, write: Callable[[], None]) -> bool:
    """Store the header task's outcome and count it, in one transaction; send the body at zero.

    Return True when this task is the first of the header to fail (its caller fails the body).
    """
    if not isinstance(get_backend(), DatabaseBackend):
        logger.error("Chord %s needs the django-db result backend; not counted", message.chord)
        write()
        return False
    alias = router.db_for_write(ChordCounter) or "default"
    with transaction.atomic(using=alias):
        write()
        rows = TaskResult.objects.using(alias).filter(task_id=message.id, chord_counted=False)
        if not rows.update(chord_counted=True):
            return False  # a copy of a task already counted
        counters = ChordCounter.objects.using(alias).filter(
            group_id=message.chord, state=ChordCounter.PENDING
        )
        if outcome.state in FAILED:
            return bool(counters.update(state=ChordCounter.FAILURE, date_done=timezone.now()))
        if _decrement(alias, str(message.chord)) == 0:
            counters.update(state=ChordCounter.SUCCESS, date_done=timezone.now())
            _send_body(alias, message)
    return False


def _decrement(alias: str, group_id: str) -> int | None:
    """Take one off the counter; return what remains (None: no pending counter)."""
    connection = connections[alias]
    table = connection.ops.quote_name(ChordCounter._meta.db_table)
    returning = connection.vendor == "postgresql" or (
        connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)
    )
    if returning:
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET remaining = remaining - 1 "
                "WHERE group_id = %s AND state = %s RETURNING remaining",
                [group_id, ChordCounter.PENDING],
            )
            row = cursor.fetchone()
        return int(row[0]) if row else None
    counters = ChordCounter.objects.using(alias).filter(
        group_id=group_id, state=ChordCounter.PENDING
    )
    counter = counters.select_for_update().first()  # MySQL/MariaDB: no UPDATE … RETURNING
    if counter is None:
        return None
    counters.update(remaining=F("remaining") - 1)
    return counter.remaining - 1


def _body(counter: ChordCounter, message: TaskMessage) -> tuple[Signature, Placement]:
    body = dict(serialization.from_jsonable(counter.body))
    later = body.pop("placement", None) or {}
    place = Placement(
        parent_id=counter.group_id,
        root_id=message.root_id,
        group_id=later.get("group_id"),
        chord=later.get("chord"),
        chain=tuple(later.get("chain") or ()),
        extra={**_owner(message), "publish_on_commit": False},  # sent before the commit
    )
    return signature(body), place


def _send_body(alias: str, message: TaskMessage) -> None:
    counter = ChordCounter.objects.using(alias).get(group_id=message.chord)
    stored = dict(
        TaskResult.objects.using(alias)
        .filter(task_id__in=counter.result_ids)
        .values_list("task_id", "result")
    )
    results = [serialization.from_jsonable(stored.get(task_id)) for task_id in counter.result_ids]
    body, place = _body(counter, message)
    body.send((results,), {}, place)


def _fail_body(message: TaskMessage, outcome: Outcome) -> None:
    """Record the body of a failed chord as failed with the header's error, as if it had run:
    its errbacks run, the rest of its chain fails, and an enclosing chord fails too."""
    alias = router.db_for_write(ChordCounter) or "default"
    counter = ChordCounter.objects.using(alias).get(group_id=message.chord)
    body, place = _body(counter, message)
    first, rest = body, tuple[dict[str, Any], ...]()
    if isinstance(body, chain):
        first, rest = body.tasks[0], tuple(step.to_dict() for step in body.tasks[1:])
    if isinstance(first, group | chord):
        _store_failed(body, message, outcome)
        return
    options = {**first.options, **place.options(), "chain": (*rest, *place.chain)}
    options.pop("publish_on_commit", None)
    failed = task_of(first.task).build_message(first.args, first.kwargs, options)
    data = serialization.exception_to_data(_error(outcome))

    def write() -> None:
        get_backend().store(failed, states.FAILURE, result=data, traceback=outcome.traceback)

    failure = replace_outcome(
        outcome, state=states.FAILURE, result=data, exception=_error(outcome), retry=None
    )
    settle(failed, failure, write)


def _mark_group_done(group_id: str) -> None:
    """Set the group's ``date_done`` once every member is final (read after this one's commit)."""
    alias = router.db_for_write(GroupResult) or "default"
    pending = GroupResult.objects.using(alias).filter(group_id=group_id, date_done__isnull=True)
    ids = pending.values_list("result_ids", flat=True).first()
    if ids is None:
        return
    done = TaskResult.objects.using(alias).filter(task_id__in=ids).ready().count()
    if done >= len(ids):
        pending.update(date_done=timezone.now())


# -- replace --------------------------------------------------------------------------------------
def replace(message: TaskMessage, replacement: dict[str, Any], *, eager: bool) -> Any:
    """Apply ``replacement`` in place of ``message``'s task: same id, chain, chord and callbacks."""
    sig = signature(replacement)
    if isinstance(sig, group):  # a group's result is the list of its results, as in Celery
        sig = chord(sig, Signature("django_tq.accumulate"))
    sig = sig.set(
        task_id=message.id,
        link=[*links_of(sig.options.get("link")), *message.link],
        link_error=[*links_of(sig.options.get("link_error")), *message.link_error],
    )
    if eager:
        return sig.apply()
    frozen = sig.freeze()
    frozen.check()
    place = Placement(
        parent_id=message.parent_id,
        root_id=message.root_id,
        group_id=message.group_id,
        chord=message.chord,
        chain=message.chain,
    )
    frozen.send((), {}, place)
    return frozen.result()


__all__ = ["REPLACED", "follow", "frozen_tasks", "replace", "settle"]
