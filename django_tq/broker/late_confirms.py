"""The collector of late publisher confirms (``BROKER_CONFIRM="batch"``): one thread per process.

A late publish returns once its frame is written; the channel's :class:`~.confirms.Confirms`
remembers it. While any channel has late messages unsettled, :class:`LateConfirms`' thread wakes
every :data:`TICK` seconds, reads whatever confirms have arrived on each (RabbitMQ acks many at
once with ``multiple``), fails the messages past their deadline, and calls the ``on_failure`` of
every message nacked, timed out or on a lost channel — in this thread, never in the publisher's.
The thread ends when no channel has late messages left; at interpreter exit :meth:`drain` waits
for the last confirms, so a script's final ``.delay()`` is settled before it ends.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from django_tq.broker.confirms import Confirms, Failure

logger = logging.getLogger("django_tq.broker")

#: seconds between two reads of the confirms that have arrived (how late a nack is seen at most)
TICK = 0.02
#: seconds the thread waits without late messages before it ends
IDLE = 1.0


class LateConfirms:
    """The channels with late messages unsettled, and the thread that settles them."""

    def __init__(self) -> None:
        self._reset()
        self._exit_registered = False

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._watched: set[Confirms] = set()
        self._thread: threading.Thread | None = None

    def watch(self, confirms: Confirms) -> None:
        """Settle ``confirms``' late messages from now on (a no-op if it is watched already)."""
        # a forked child: the parent's thread, lock and channels are not its own
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            if confirms in self._watched:
                return
            self._watched.add(confirms)
            self._start()
        self._wake.set()

    def abandon(self, confirms: Confirms, reason: str) -> None:
        """Fail ``confirms``' late messages now (its connection is dropped): the thread reports them."""
        confirms.abandon(reason)
        if confirms.idle:
            return
        with self._lock:
            self._watched.add(confirms)
            self._start()
        self._wake.set()

    def _start(self) -> None:
        """Start the thread unless it runs (the caller holds the lock)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name="django_tq-late-confirms", daemon=True
        )
        self._thread.start()
        if not self._exit_registered:
            self._exit_registered = True
            atexit.register(self.drain)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every late message is settled and reported; return whether it happened in time."""
        if self._pid != os.getpid():
            return True
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                idle = not self._watched
            if idle:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(TICK / 2)

    def _run(self) -> None:
        while True:
            with self._lock:
                watched = list(self._watched)
                if not watched:
                    self._wake.clear()
            if not watched:
                if self._wake.wait(IDLE):
                    continue
                with self._lock:
                    if not self._watched:
                        self._thread = None
                        return
                continue
            time.sleep(TICK)
            now = time.monotonic()
            for confirms in watched:
                self._settle(confirms, now)

    def _settle(self, confirms: Confirms, now: float) -> None:
        try:
            confirms.collect()
        except Exception as exc:  # the connection or channel is gone: nothing more will come
            confirms.abandon(f"the publishing channel was lost ({exc!r})")
        confirms.expire(now)
        for failure in confirms.take_failures():
            _report(failure)
        with confirms.lock, self._lock:
            if confirms.idle:
                self._watched.discard(confirms)


def _report(failure: Failure) -> None:
    late, error = failure
    try:
        late.on_failure(late.item, error)
    except Exception:  # hooks observe: one failing handler never stops the others
        logger.exception("Handling the late publish failure of %s failed", late.item.label)
