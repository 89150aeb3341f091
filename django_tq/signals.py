"""Django signals sent around the task life cycle (what error trackers and tracing hook into).

Receivers observe; they never break the queue: a failing receiver is logged with its name and the
task goes on (``send_robust`` via :func:`send`).
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("django_tq.signals")

before_task_publish = Signal()
after_task_publish = Signal()
#: ``BROKER_CONFIRM="batch"``: a message ``.delay()`` had written was then refused or not confirmed
task_publish_failed = Signal()
task_enqueued = Signal()
task_received = Signal()
task_prerun = Signal()
task_started = Signal()
task_succeeded = Signal()
task_failed = Signal()
task_retried = Signal()
task_revoked = Signal()
task_postrun = Signal()
task_finished = Signal()
worker_process_init = Signal()
worker_process_shutdown = Signal()
worker_ready = Signal()
worker_shutdown = Signal()
beat_tick = Signal()


def send(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal`` to every receiver; log (never raise) a receiver's error."""
    # ``receivers`` empty: nobody connected to it at all, the common case on a task's path
    # (``has_listeners`` alone takes the dispatcher's lock and builds a cache key, ~5 µs)
    if not signal.receivers or not signal.has_listeners(sender):
        return
    for receiver, response in signal.send_robust(sender, **kwargs):
        if isinstance(response, Exception):
            name = getattr(receiver, "__qualname__", repr(receiver))
            logger.error("Signal receiver %s failed: %r", name, response, exc_info=response)
