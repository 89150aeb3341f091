"""Pools: how a worker runs its consumers — prefork children (billiard), threads, or solo.

Every pool runs the same :class:`~django_tq.worker.consumer.Consumer` loop; they differ only in
where. ``tick()`` reports children that died so the worker can release their leases at once, and
respawns them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import billiard
from django.db import connections

logger = logging.getLogger("django_tq.worker")

#: what a pool runs: ``target(index, stop_event, counter)`` runs one consumer until stopped
Target = Callable[[int, Any, Any], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class ChildExit:
    """A child (process or thread) that ended."""

    index: int
    pid: int
    exitcode: int | None


class Pool:
    """The pool contract."""

    name = "base"
    #: the consumer runs in the worker's main thread (``run_in_main_thread`` blocks)
    runs_in_main_thread = False
    #: a running task can be killed from outside (hard time limits, ``terminate=True``)
    supports_terminate = False

    def __init__(self, target: Target, concurrency: int) -> None:
        self.target = target
        self.concurrency = concurrency

    def start(self) -> None:
        """Start the consumers."""
        raise NotImplementedError

    def run_in_main_thread(self) -> None:
        """Run the consumer here (solo only)."""
        raise NotImplementedError

    def tick(self, *, respawn: bool = True) -> list[ChildExit]:
        """Reap ended children (respawning them unless stopping); return them."""
        return []

    def stop(self) -> None:
        """Ask every consumer to finish its running task and stop (warm)."""
        raise NotImplementedError

    def kill(self) -> list[ChildExit]:
        """Stop every consumer now, abandoning running tasks (cold)."""
        raise NotImplementedError

    def join(self, timeout: float | None) -> bool:
        """Wait for every consumer to end; return whether they all did."""
        raise NotImplementedError

    def processed(self) -> int:
        """Return how many tasks the consumers finished."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Return the process ids running consumers."""
        return [os.getpid()]


def _child_main(target: Target, index: int, stop_event: Any, counter: Any) -> None:
    """Entry point of a prefork child: own signals, own DB connections, one consumer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent relays Ctrl-C as SIGTERM

    def warm(signum: int, frame: Any) -> None:
        stop_event.set()  # finish the running task, then stop (the parent sends SIGQUIT for cold)

    def cold(signum: int, frame: Any) -> None:
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, warm)
    signal.signal(signal.SIGQUIT, cold)
    for connection in connections.all(initialized_only=True):
        connection.connection = None  # inherited sockets belong to the parent: never use them
    target(index, stop_event, counter)


class PreforkPool(Pool):
    """Each child process runs a full consumer; the parent restarts children that die."""

    name = "prefork"
    supports_terminate = True

    def __init__(self, target: Target, concurrency: int) -> None:
        super().__init__(target, concurrency)
        self.children: list[Any] = [None] * concurrency
        self.events: list[Any] = [None] * concurrency
        self.counters = [billiard.Value("L", 0, lock=False) for _ in range(concurrency)]
        self.finished = 0

    def _spawn(self, index: int) -> None:
        connections.close_all()  # never fork with an open connection
        event = billiard.Event()
        child = billiard.Process(
            target=_child_main,
            args=(self.target, index, event, self.counters[index]),
            name=f"django_tq-child-{index}",
        )
        child.daemon = False
        child.start()
        self.children[index], self.events[index] = child, event

    def start(self) -> None:
        for index in range(self.concurrency):
            self._spawn(index)

    def tick(self, *, respawn: bool = True) -> list[ChildExit]:
        exits = []
        for index, child in enumerate(self.children):
            if child is None or child.is_alive():
                continue
            child.join(0)
            exits.append(ChildExit(index=index, pid=child.pid, exitcode=child.exitcode))
            self.children[index] = None
            if respawn:
                if child.exitcode not in (0, None):
                    logger.error(
                        "Child %d (pid %d) died with exit code %s; starting a new one",
                        index,
                        child.pid,
                        child.exitcode,
                    )
                self._spawn(index)
        return exits

    def stop(self) -> None:
        for event in self.events:
            if event is not None:
                event.set()

    def kill(self) -> list[ChildExit]:
        for child in self.children:
            if child is not None and child.is_alive():
                try:
                    os.kill(child.pid, signal.SIGQUIT)
                except ProcessLookupError:
                    pass
        if not self.join(3.0):
            for child in self.children:
                if child is not None and child.is_alive():
                    os.kill(child.pid, signal.SIGKILL)
            self.join(3.0)
        return self.tick(respawn=False)

    def join(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for child in self.children:
            if child is None:
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            child.join(remaining)
        return all(child is None or not child.is_alive() for child in self.children)

    def processed(self) -> int:
        return sum(int(counter.value) for counter in self.counters)

    def pids(self) -> list[int]:
        return [child.pid for child in self.children if child is not None and child.is_alive()]


class ThreadPool(Pool):
    """Consumers in threads of the worker process (I/O-bound tasks; no hard time limits)."""

    name = "threads"

    def __init__(self, target: Target, concurrency: int) -> None:
        super().__init__(target, concurrency)
        self.events = [threading.Event() for _ in range(concurrency)]
        self.counters = [_Counter() for _ in range(concurrency)]
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.concurrency):
            thread = threading.Thread(
                target=self._run, args=(index,), name=f"django_tq-consumer-{index}", daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def _run(self, index: int) -> None:
        try:
            self.target(index, self.events[index], self.counters[index])
        finally:
            connections.close_all()

    def stop(self) -> None:
        for event in self.events:
            event.set()

    def kill(self) -> list[ChildExit]:
        self.stop()  # threads cannot be killed: the process exits without waiting for them
        return []

    def join(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self.threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(thread.is_alive() for thread in self.threads)

    def processed(self) -> int:
        return sum(counter.value for counter in self.counters)


class SoloPool(ThreadPool):
    """One consumer in the worker's main thread."""

    name = "solo"
    runs_in_main_thread = True

    def __init__(self, target: Target, concurrency: int = 1) -> None:
        super().__init__(target, 1)
        self.done = threading.Event()

    def start(self) -> None:
        """Nothing to start: :meth:`run_in_main_thread` runs the consumer."""

    def run_in_main_thread(self) -> None:
        try:
            self.target(0, self.events[0], self.counters[0])
        finally:
            self.done.set()

    def join(self, timeout: float | None) -> bool:
        return self.done.wait(timeout)


class _Counter:
    """A plain counter with the ``.value`` of billiard's shared ``Value``."""

    def __init__(self) -> None:
        self.value = 0


POOLS: dict[str, type[Pool]] = {"prefork": PreforkPool, "threads": ThreadPool, "solo": SoloPool}


def make_pool(name: str, target: Target, concurrency: int) -> Pool:
    """Build the pool called ``name``."""
    return POOLS[name](target, concurrency)
