"""Unique tasks: enqueueing a key held by a queued or running task returns that task.

The lock is a ``UniqueLock`` row whose ``key`` column is unique, so it holds across processes,
hosts and brokers on every database Django supports. :func:`acquire` runs inside the caller's
transaction (``enqueue()`` calls it before writing the result row): a rollback releases the lock
with everything else, and a concurrent enqueue of the same key waits on the row until the first
one commits or rolls back. The insert runs in a savepoint, so a duplicate key error leaves the
caller's transaction usable (no ``ON CONFLICT``, which MySQL lacks). :func:`release` deletes the
row when the task reaches a final state; a row past ``expires_at`` — its task lost, or running
far longer than ``unique_ttl`` — is taken over by the next enqueue.

Keys: ``unique_key="…"`` is used as given (one namespace for the whole project). ``@task(unique=
("user_id",))`` builds ``"<task name>:<JSON of the named arguments>"``, e.g.
``shop.tasks.sync:{"user_id":42}`` (``unique=True``: every argument, defaults filled in), read
through the task's signature, so ``sync(42)`` and ``sync(user_id=42)`` share a key. A key longer
than 255 characters is cut and ends in ``#sha256:<hex digest of the whole key>``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, router, transaction
from django.db.models import Q
from django.utils import timezone

from django_tq import serialization, states
from django_tq.conf import tq_settings
from django_tq.message import TaskMessage
from django_tq.models import UniqueLock
from django_tq.result_backends import get_backend
from django_tq.sqlite import write_atomic

logger = logging.getLogger("django_tq.unique")

#: the length of ``UniqueLock.key``
MAX_KEY_LENGTH = 255
_DIGEST_SUFFIX = len("#sha256:") + 64
#: attempts to take a lock that is released while it is being read (then it is free)
_ATTEMPTS = 5


def fit(key: str) -> str:
    """Return ``key``, or when it is too long for the column, its start and a digest of it."""
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"{key[: MAX_KEY_LENGTH - _DIGEST_SUFFIX]}#sha256:{digest}"


def build_key(task_name: str, arguments: Mapping[str, Any]) -> str:
    """Return the key of a call of ``task_name`` with ``arguments`` (parameter name → value)."""
    values = json.dumps(
        serialization.to_jsonable(dict(arguments)),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return fit(f"{task_name}:{values}")


def expires_at(message: TaskMessage, now: dt.datetime) -> dt.datetime:
    """Return when ``message``'s lock goes stale: ``unique_ttl`` after the task is due."""
    ttl = message.unique_ttl if message.unique_ttl is not None else tq_settings.UNIQUE_TTL
    due = max(now, message.eta) if message.eta is not None else now
    return due + dt.timedelta(seconds=float(ttl))


def acquire(message: TaskMessage, *, using: str, now: dt.datetime | None = None) -> str:
    """Take ``message``'s unique key on alias ``using``; return the id of the task holding it.

    That is ``message.id`` when the key was free, stale, held by a finished task, or already
    held by this task (a retry, which extends the lock); else the id of the task that holds it.
    """
    key = message.unique_key
    assert key is not None, "acquire() needs a message with a unique_key"
    now = now or timezone.now()
    until = expires_at(message, now)
    locks = UniqueLock.objects.using(using).filter(key=key)
    with write_atomic(using):
        for _ in range(_ATTEMPTS):
            try:
                with transaction.atomic(using=using):
                    UniqueLock.objects.using(using).create(
                        key=key, task_id=message.id, expires_at=until
                    )
                return message.id
            except IntegrityError:
                pass
            if locks.filter(Q(task_id=message.id) | Q(expires_at__lte=now)).update(
                task_id=message.id, expires_at=until
            ):
                return message.id  # a retry of the holder, or a stale lock taken over
            holder = locks.values_list("task_id", flat=True).first()
            if holder is None:  # REPEATABLE READ hides a row committed since the snapshot
                holder = locks.select_for_update().values_list("task_id", flat=True).first()
            if holder is None:
                continue  # released meanwhile: the key is free, try again
            if not _has_finished(holder):
                return str(holder)
            if locks.filter(task_id=holder).update(task_id=message.id, expires_at=until):
                return message.id
    raise RuntimeError(f"Could not take the unique key {key!r}: it changed hands {_ATTEMPTS} times")


def _has_finished(task_id: str) -> bool:
    """Return whether ``task_id``'s result is final (its lock was left behind, e.g. a killed child)."""
    data = get_backend().get(task_id)
    return data is not None and data.state in states.READY_STATES


def release(message: TaskMessage) -> None:
    """Free ``message``'s unique key, if it holds one (its task reached a final state)."""
    if message.unique_key is not None:
        release_key(message.unique_key, message.id)


def release_key(key: str, task_id: str) -> None:
    """Delete the lock on ``key`` if ``task_id`` still holds it (not if it was taken over)."""
    alias = router.db_for_write(UniqueLock) or "default"
    deleted, _ = UniqueLock.objects.using(alias).filter(key=key, task_id=task_id).delete()
    if deleted:
        logger.debug("Released unique key %r of task %s", key, task_id)
