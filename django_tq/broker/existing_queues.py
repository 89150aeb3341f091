"""Declaring a queue on RabbitMQ, and using one that already exists with other arguments.

django_tq declares each AMQP queue with ``x-max-priority`` 10 (or as a quorum queue). A queue
another producer made first — Celery's, declared with no arguments since the deployment began —
has other arguments, and RabbitMQ cannot change them: it refuses the declaration with
``PRECONDITION_FAILED - inequivalent arg 'x-max-priority'`` and closes the channel. Refusing to
consume that queue would make running beside Celery impossible, so :func:`declare` accepts the
queue as it is: it checks that it exists (a passive declare), declares the exchange and binding
django_tq would (these do not depend on the queue's arguments), and logs once per queue and
process what is lost (priorities, or a quorum queue's delivery limit). A quorum queue found so
(Celery's ``task_default_queue_type = "quorum"``) is reported to the caller, which must then
consume it as one: RabbitMQ refuses a channel-wide prefetch on it (``NOT_IMPLEMENTED - queue …
does not support global qos``). The refusal is the only place AMQP says so (reading a queue's
arguments needs the management plugin).

Every declaration here uses a channel of its own, so the refusal never closes the channel that
publishes or consumes.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

logger = logging.getLogger("django_tq.broker")

#: AMQP's reply code for a declaration whose arguments differ from the existing queue's
PRECONDITION_FAILED = 406
#: what RabbitMQ's refusal says when the existing queue is a quorum queue
QUORUM_REFUSAL = re.compile(r"inequivalent arg 'x-queue-type'.*current is the value 'quorum'")

_warned: set[str] = set()
_warned_lock = threading.Lock()


def declare(connection: Any, queue: Any) -> bool:
    """Declare kombu ``queue`` on ``connection``; if it exists with other arguments, use it so.

    Return whether it turned out to be a quorum queue although declared otherwise. Raise the
    broker's channel error for anything else (a queue that vanished in between is ``NOT_FOUND``).
    """
    channel = connection.channel()
    try:
        queue(channel).declare()
        return False
    except connection.channel_errors as exc:
        if getattr(exc, "reply_code", None) != PRECONDITION_FAILED:
            raise
        refusal = exc
    finally:
        _close(channel)
    channel = connection.channel()
    try:
        bound = queue(channel)
        bound.queue_declare(passive=True)
        if bound.exchange is not None and bound.exchange.name:
            bound.exchange.declare()
            bound.queue_bind()
    finally:
        _close(channel)
    _warn_once(queue, refusal)
    return bool(QUORUM_REFUSAL.search(str(refusal)))


def _close(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # already closed by the broker's refusal
        pass


def _warn_once(queue: Any, refusal: BaseException) -> None:
    with _warned_lock:
        if queue.name in _warned:
            return
        _warned.add(queue.name)
    wanted = ", ".join(f"{key}={value}" for key, value in sorted(queue.queue_arguments.items()))
    logger.warning(
        "Queue %r exists on RabbitMQ with other arguments than django_tq declares (%s): using it "
        "as it is (%s). RabbitMQ cannot change a queue's arguments; while it stays so, message "
        "priorities are not applied in it (a quorum queue's delivery limit neither). To have "
        "them, drain the queue and delete it: the next declaration makes it django_tq's way.",
        queue.name,
        wanted or "no arguments",
        " ".join(str(refusal).split()),
    )
