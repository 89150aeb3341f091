"""``SIGUSR1``: where is every thread of this process? One record in the worker's log."""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from types import FrameType

logger = logging.getLogger("django_tq.worker")


def log_tracebacks(frame: FrameType | None = None) -> str:
    """Log the stack of every thread of this process as one WARNING record; return its text.

    ``frame`` is where a signal handler interrupted the calling thread: its stack is shown from
    there, without the handler's own frames.
    """
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    here = threading.get_ident()
    stacks = []
    for ident, top in sys._current_frames().items():
        if ident == here and frame is not None:
            top = frame
        stack = "".join(traceback.format_stack(top))
        stacks.append(f'Thread "{names.get(ident, "?")}" ({ident}):\n{stack}')
    text = "\n".join(stacks)
    logger.warning(
        "SIGUSR1: the stacks of the %d thread(s) of pid %d (most recent call last)\n%s",
        len(stacks),
        os.getpid(),
        text,
    )
    return text
