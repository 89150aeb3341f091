"""Acks held back for a moment and sent together: one round trip for several finished tasks.

A leased channel (``redis://``, ``django://``) that batches its acks queues each acked delivery tag
here instead of sending it at once. The tags travel with the channel's next round trip anyway — its
next claim, the idle wait, a lease renewal — or, when none comes within ``delay`` seconds (a long
task follows a short one), a flusher thread of the batch sends them on its own. On a backlog that
turns an ack round trip per task into none: a claim of ``k`` messages carries the ``k`` acks of the
last ones.

An ack queued here is not in the store yet: a process killed before the flush leaves those
messages leased, and they come back like any message of a dead worker (at-least-once; see
``docs/reliability.md``). The store still fences every ack: a tag whose lease expired and was
taken over meanwhile is refused when the batch arrives, exactly as a lone late ack would be.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger("django_tq.transport")


class DelayedFlush:
    """A daemon thread that calls ``flush`` ``delay`` seconds after it is poked, until closed.

    The batches of acks use it for acks that no round trip of the consumer carried in time.
    """

    def __init__(
        self, flush: Callable[[], None], delay: float, *, name: str, log: logging.Logger
    ) -> None:
        self._flush = flush
        self.delay = delay
        self._name = name
        self._log = log
        self._lock = threading.Lock()
        self._due = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        """Have ``flush`` called within ``delay`` seconds (the thread starts at the first poke)."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed.is_set():
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
        self._due.set()

    def close(self) -> None:
        """Stop the thread (flush first what must go out)."""
        self._closed.set()
        self._due.set()

    def _run(self) -> None:
        while True:
            self._due.wait()
            if self._closed.wait(self.delay):
                return
            self._due.clear()
            try:
                self._flush()
            except Exception:  # the consumer's own next round trip meets the outage
                self._log.debug("Sending batched acks failed", exc_info=True)


class AckBatch:
    """Delivery tags acked by the consumer and not sent to the store yet."""

    def __init__(self, send: Callable[[list[Any]], None], delay: float) -> None:
        #: sends tags to the store (the channel's own ack, fenced by its lease owner id)
        self._send = send
        #: the longest a tag waits for a round trip to ride on before the flusher sends it
        self.delay = delay
        self._tags: list[Any] = []
        self._lock = threading.Lock()
        self._flusher = DelayedFlush(self.flush, delay, name="django_tq-ack-flusher", log=logger)

    def __len__(self) -> int:
        return len(self._tags)

    def add(self, tags: Iterable[Any]) -> None:
        """Queue acked ``tags``; they are sent within ``delay`` seconds."""
        with self._lock:
            self._tags.extend(tags)
        self._flusher.poke()

    def take(self) -> list[Any]:
        """Remove and return every queued tag (the caller sends them, or :meth:`give_back`)."""
        with self._lock:
            tags, self._tags = self._tags, []
        return tags

    def give_back(self, tags: list[Any]) -> None:
        """Queue ``tags`` again, first: the round trip that carried them failed."""
        if tags:
            with self._lock:
                self._tags[:0] = tags

    def flush(self) -> None:
        """Send every queued tag now (kept for the next try if the store cannot be reached)."""
        tags = self.take()
        if not tags:
            return
        try:
            self._send(tags)
        except BaseException:
            self.give_back(tags)
            raise

    def close(self) -> None:
        """Stop the flusher thread (call :meth:`flush` first to send what is queued)."""
        self._flusher.close()
