"""Pools: how a worker runs its consumers — prefork children (billiard), threads, or solo.

Every pool runs the same :class:`~django_tq.worker.consumer.Consumer` loop; they differ only in
where. ``tick()`` reports children that died so the worker can release their leases at once, and
respawns them.
"""

from __future__ import annotations

import gc
import json
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

from django_tq import abort
from django_tq.worker.tracebacks import log_tracebacks

logger = logging.getLogger("django_tq.worker")

#: what a pool runs: ``target(index, stop_event, slot)`` runs one consumer until stopped
Target = Callable[[int, Any, "Slot"], None]
#: what a consumer answers "what do you hold?" with: ``provider(limit)`` returns at most
#: ``limit`` bytes (see :meth:`Slot.serve`)
Provider = Callable[[int], bytes]
#: bytes of shared memory a prefork child's answer may take (each held message takes ~300)
ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class Running:
    """A task a consumer is executing now."""

    index: int
    pid: int  #: the process running it (the worker's own for threads and solo)
    task_id: str
    task_name: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ChildExit:
    """A child (process or thread) that ended."""

    index: int
    pid: int | None  #: the child process, or None for a thread (it released its own leases)
    exitcode: int | None
    running: Any = None  #: the delivery tag it was executing when it ended, if any
    #: ``(task id, signal)`` when it ended running a task the pool was asked to terminate
    terminated: tuple[str, str] | None = None


class Slot:
    """What one consumer shares with its pool: tasks finished, the delivery it is running, a
    request to terminate that task, and questions about the messages it holds.

    In a prefork pool the values live in shared memory, so the parent can read what a child
    was running when it died (that message, and only that one, counts as a delivery), and the
    child can tell the parent's terminate signal from a signal sent to the whole process group.

    The messages a consumer holds (prefetched, waiting for an ETA or a rate limit) live in its
    own memory. The pool asks for them (:meth:`ask`, for ``tqinspect reserved|scheduled``): a
    prefork child's thread, blocked on an event until then (nothing on the hot path), writes the
    answer into shared memory, then its number; an in-process consumer answers at once.
    """

    def __init__(self, *, shared: bool) -> None:
        self.processed: Any = billiard.Value("L", 0, lock=False) if shared else _Counter()
        self._running: Any = billiard.Array("c", 512, lock=False) if shared else _Counter()
        self._terminate: Any = billiard.Array("c", 320, lock=False) if shared else _Counter()
        self._question: Any = billiard.Value("L", 0, lock=False) if shared else _Counter()
        self._answered: Any = billiard.Value("L", 0, lock=False) if shared else _Counter()
        self._answer: Any = billiard.Array("c", ANSWER_BYTES, lock=False) if shared else _Counter()
        self._asked: Any = billiard.Event() if shared else None
        self._provider: Provider | None = None

    @property
    def is_shared(self) -> bool:
        """Return whether another process (the prefork parent) can read this slot."""
        return not isinstance(self.processed, _Counter)

    def started(
        self,
        tag: Any,
        task_id: str | None = None,
        *,
        task_name: str | None = None,
        deadline: float | None = None,
    ) -> None:
        """Note that the consumer is executing the delivery ``tag`` (task ``task_id``).

        ``deadline`` (epoch seconds) is when the task's hard time limit runs out.
        """
        record = [tag, task_id, task_name, deadline]
        self._terminate.value = b""
        self._running.value = json.dumps(record).encode()[:511] if tag is not None else b""

    def finished(self) -> None:
        """Note that the consumer settled its delivery."""
        self._running.value = b""
        self._terminate.value = b""
        self.processed.value += 1

    def request_terminate(self, task_id: str, signal_name: str) -> None:
        """Note that the pool terminates the running task ``task_id`` with ``signal_name``."""
        self._terminate.value = json.dumps([task_id, signal_name]).encode()[:319]

    def terminate_request(self) -> tuple[str, str] | None:
        """Return ``(task id, signal name)`` of the terminate asked for the running task."""
        raw = self._terminate.value
        try:
            task_id, signal_name = json.loads(raw) if raw else (None, None)
        except ValueError:  # an id too long for the slot: never asked for (nor honoured)
            return None
        return None if task_id is None else (str(task_id), str(signal_name))

    def _read(self) -> list[Any]:
        raw = self._running.value
        try:
            return list(json.loads(raw)) if raw else [None] * 4
        except ValueError:  # a tag too long for the slot: the parent cannot tell which it was
            return [None] * 4

    def running(self) -> Any:
        """Return the delivery tag being executed, or None."""
        return self._read()[0]

    def running_details(self) -> tuple[str, str] | None:
        """Return ``(task id, task name)`` of the task being executed, or None."""
        _, task_id, task_name, _ = self._read()
        return None if task_id is None else (str(task_id), str(task_name or ""))

    def running_task(self) -> str | None:
        """Return the id of the task being executed, or None."""
        task_id = self._read()[1]
        return str(task_id) if task_id is not None else None

    def serve(self, provider: Provider) -> None:
        """Answer the pool's questions with ``provider(limit)`` (the consumer calls it once).

        In a prefork child a daemon thread waits for questions; in-process, :meth:`ask` calls
        ``provider`` itself.
        """
        first = self._provider is None
        self._provider = provider
        if self.is_shared and first:
            threading.Thread(
                target=self._answer_questions, name="django_tq-answers", daemon=True
            ).start()

    def _answer_questions(self) -> None:
        while True:
            self._asked.wait()
            self._asked.clear()
            self._write_answer(int(self._question.value))

    def _write_answer(self, question: int) -> None:
        assert self._provider is not None
        try:
            payload = self._provider(ANSWER_BYTES - 1)[: ANSWER_BYTES - 1]
        except Exception:  # a bug must not end the thread: the parent hears "no answer"
            logger.exception("Answering the pool's question failed")
            return
        self._answer.value = payload  # the answer first, then its number: never read half
        self._answered.value = question

    def ask(self) -> int:
        """Ask the consumer what it holds; return the question's number (see :meth:`answer_to`)."""
        question = int(self._question.value) + 1
        self._question.value = question
        if self._asked is not None:
            self._asked.set()
        elif self._provider is not None:
            self._write_answer(question)
        return question

    def answer_to(self, question: int) -> bytes | None:
        """Return the consumer's answer to ``question``, or None while it has not come."""
        if int(self._answered.value) != question:
            return None
        return bytes(self._answer.value)

    def overdue(self, now: float) -> tuple[str, str] | None:
        """Return ``(task id, task name)`` if the running task is past its hard time limit."""
        _, task_id, task_name, deadline = self._read()
        if task_id is None or deadline is None or now < deadline:
            return None
        return str(task_id), str(task_name or "")


class Pool:
    """The pool contract: run ``concurrency`` consumers and keep them running until stopped.

    ``tick()`` reaps consumers that ended (crashed, recycled by ``--max-tasks-per-child``, or
    asked to by ``restart()``) and starts new ones, unless the pool is stopping.
    """

    name = "base"
    #: the consumer runs in the worker's main thread (``run_in_main_thread`` blocks)
    runs_in_main_thread = False
    #: a running task's process can be killed from outside (hard time limits, ``SIGKILL``);
    #: every pool can terminate a task by raising in it (:mod:`django_tq.abort`)
    supports_terminate = False

    def __init__(self, target: Target, concurrency: int) -> None:
        self.target = target
        self.concurrency = concurrency
        self.stopping = False
        self.restarts = 0  #: consumers started again after one ended (what the metrics count)

    def start(self) -> None:
        """Start the consumers."""
        raise NotImplementedError

    def run_in_main_thread(self) -> None:
        """Run the consumer here (solo only)."""
        raise NotImplementedError

    def tick(self) -> list[ChildExit]:
        """Reap ended consumers, start new ones unless stopping; return the ended ones."""
        return []

    def restart(self) -> None:
        """Ask every consumer to finish its running task; ``tick()`` starts fresh ones."""
        raise NotImplementedError

    def resize(self, concurrency: int) -> None:
        """Run ``concurrency`` consumers from now on (``pool_grow``/``pool_shrink``, autoscale).

        New consumers start at once; the highest-numbered ones beyond ``concurrency`` are asked
        to finish their running task and stop (warm), and ``tick()`` does not replace them.
        """
        raise ValueError(f"the {self.name} pool cannot change its size")

    def stop(self) -> None:
        """Ask every consumer to finish its running task and stop for good (warm)."""
        self.stopping = True
        self.restart()

    def kill(self) -> list[ChildExit]:
        """Stop every consumer now, abandoning running tasks (cold)."""
        raise NotImplementedError

    def join(self, timeout: float | None) -> bool:
        """Wait for every consumer to end; return whether they all did."""
        raise NotImplementedError

    def processed(self) -> int:
        """Return how many tasks the consumers finished."""
        raise NotImplementedError

    def running_tasks(self) -> list[str]:
        """Return the ids of the tasks the consumers are running."""
        return [running.task_id for running in self.running()]

    def running(self) -> list[Running]:
        """Return what each consumer is executing now."""
        return []

    def child_pids(self) -> list[int]:
        """Return the process ids of the live child processes (none but for prefork)."""
        return [pid for _, pid in self.child_processes()]

    def child_processes(self) -> list[tuple[int, int]]:
        """Return ``(index, pid)`` of each live consumer process (none but for prefork)."""
        return []

    def consumers(self) -> list[tuple[int, int, Slot]]:
        """Return ``(index, pid, slot)`` of each live consumer."""
        return []

    def holdings(
        self, timeout: float
    ) -> tuple[list[tuple[int, int, bytes]], list[tuple[int, int]]]:
        """Ask every live consumer what it holds; wait up to ``timeout`` seconds for answers.

        Return the answers ``(index, pid, answer)`` and the ``(index, pid)`` of each consumer
        that did not answer in time (e.g. a task holding the GIL in C code).
        """
        asked = [(index, pid, slot, slot.ask()) for index, pid, slot in self.consumers()]
        end = time.monotonic() + timeout
        answers: dict[int, bytes] = {}
        while True:
            for index, _, slot, question in asked:
                if index not in answers and (answer := slot.answer_to(question)) is not None:
                    answers[index] = answer
            if len(answers) == len(asked) or time.monotonic() >= end:
                break
            time.sleep(0.005)
        return (
            [(index, pid, answers[index]) for index, pid, _, _ in asked if index in answers],
            [(index, pid) for index, pid, _, _ in asked if index not in answers],
        )

    def terminate(self, task_id: str, signal_name: str) -> bool:
        """Stop the running task ``task_id`` as ``signal_name`` means; return whether asked now.

        A task is asked once per signal: False when it is not running, or was asked already
        with that signal (another one, e.g. ``SIGKILL`` after ``SIGTERM``, asks again).
        """
        return False

    def kill_overdue(self, now: float) -> list[tuple[str, str]]:
        """Kill consumers whose task is past its hard time limit; return ``(id, name)`` of each."""
        return []


def _child_main(target: Target, index: int, stop_event: Any, slot: Slot) -> None:
    """Entry point of a prefork child: own signals, own DB connections, one consumer.

    ``SIGTERM``, ``SIGINT`` and ``SIGUSR1`` mean "terminate the running task" when the parent
    asked for it in the slot before signalling; otherwise they keep their meaning for the whole
    worker: ``SIGTERM`` finishes the running task then stops (warm), ``SIGINT`` is left to the
    parent (Ctrl-C reaches it too, and it stops the children), ``SIGUSR1`` logs the stacks.
    """
    handled: list[tuple[str, str] | None] = [None]

    def on_signal(signum: int, frame: Any) -> None:
        request = slot.terminate_request()
        name = signal.Signals(signum).name
        if request is not None and request != handled[0] and request[1] == name:
            handled[0] = request
            abort.terminate(*request)  # raises in the task, right here, when it runs now
            return
        if signum == signal.SIGTERM:
            stop_event.set()  # finish the running task, then stop (the parent sends SIGQUIT for cold)
        elif signum == signal.SIGUSR1:
            log_tracebacks(frame)

    def cold(signum: int, frame: Any) -> None:
        raise SystemExit(1)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, on_signal)
    signal.signal(signal.SIGQUIT, cold)
    for connection in connections.all(initialized_only=True):
        connection.connection = None  # inherited sockets belong to the parent: never use them
    target(index, stop_event, slot)


def _deadline(timeout: float | None) -> Callable[[], float | None]:
    """Return a function giving the time left until ``timeout`` from now (None: no limit)."""
    end = None if timeout is None else time.monotonic() + timeout
    return lambda: None if end is None else max(0.0, end - time.monotonic())


class PreforkPool(Pool):
    """Each child process runs a full consumer; the parent restarts children that end."""

    name = "prefork"
    supports_terminate = True

    def __init__(self, target: Target, concurrency: int) -> None:
        super().__init__(target, concurrency)
        self.children: list[Any] = [None] * concurrency
        self.events: list[Any] = [None] * concurrency
        self.slots = [Slot(shared=True) for _ in range(concurrency)]

    def _spawn(self, index: int) -> None:
        connections.close_all()  # never fork with an open connection
        # Everything allocated so far (Django, the apps, the tasks) moves to the collector's
        # permanent generation: a child's collections then never write to those objects' GC
        # headers, so the pages holding them stay shared with the parent instead of being
        # copied into every child (what PSS counts; see docs/performance.md).
        gc.freeze()
        event = billiard.Event()
        child = billiard.Process(
            target=_child_main,
            args=(self.target, index, event, self.slots[index]),
            name=f"django_tq-child-{index}",
        )
        child.start()
        self.children[index], self.events[index] = child, event

    def start(self) -> None:
        for index in range(self.concurrency):
            self._spawn(index)

    def resize(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"a pool needs at least one consumer, not {concurrency}")
        while len(self.children) < concurrency:
            self.children.append(None)
            self.events.append(None)
            self.slots.append(Slot(shared=True))
        old, self.concurrency = self.concurrency, concurrency
        for index in range(concurrency, len(self.events)):
            if self.events[index] is not None:
                self.events[index].set()  # finish the running task, then stop
        for index in range(min(old, concurrency), concurrency):
            if self.children[index] is None and not self.stopping:
                self._spawn(index)

    def tick(self) -> list[ChildExit]:
        exits = []
        for index, child in enumerate(self.children):
            if child is None or child.is_alive():
                continue
            child.join(0)
            slot = self.slots[index]
            running, task_id, request = (
                slot.running(),
                slot.running_task(),
                slot.terminate_request(),
            )
            terminated = request if request is not None and request[0] == task_id else None
            slot.started(None)
            exits.append(
                ChildExit(
                    index=index,
                    pid=child.pid,
                    exitcode=child.exitcode,
                    running=running,
                    terminated=terminated,
                )
            )
            self.children[index] = None
            if index >= self.concurrency:
                logger.info("Child %d (pid %d) stopped: the pool shrank", index, child.pid)
            elif not self.stopping:
                if terminated is not None:
                    logger.info(
                        "Child %d (pid %d) ended by terminating task %s with %s; "
                        "starting a new one",
                        index,
                        child.pid,
                        *terminated,
                    )
                elif child.exitcode not in (0, None):
                    logger.error(
                        "Child %d (pid %d) died with exit code %s; starting a new one",
                        index,
                        child.pid,
                        child.exitcode,
                    )
                self.restarts += 1
                self._spawn(index)
        return exits

    def restart(self) -> None:
        for event in self.events:
            if event is not None:
                event.set()

    def kill(self) -> list[ChildExit]:
        self.stopping = True
        self._signal(signal.SIGQUIT)
        if not self.join(3.0):
            self._signal(signal.SIGKILL)
            self.join(3.0)
        return self.tick()

    def _signal(self, signum: int) -> None:
        for child in self.children:
            if child is not None and child.is_alive():
                try:
                    os.kill(child.pid, signum)
                except ProcessLookupError:
                    pass

    def join(self, timeout: float | None) -> bool:
        remaining = _deadline(timeout)
        for child in self.children:
            if child is not None:
                child.join(remaining())
        return all(child is None or not child.is_alive() for child in self.children)

    def processed(self) -> int:
        return sum(int(slot.processed.value) for slot in self.slots)

    def kill_overdue(self, now: float) -> list[tuple[str, str]]:
        killed = []
        for child, slot in zip(self.children, self.slots, strict=True):
            task = slot.overdue(now)
            if task is not None and child is not None and child.is_alive():
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.append(task)
        return killed

    def running(self) -> list[Running]:
        return [
            Running(index=index, pid=child.pid, task_id=details[0], task_name=details[1])
            for index, (child, slot) in enumerate(zip(self.children, self.slots, strict=True))
            if child is not None and (details := slot.running_details()) is not None
        ]

    def child_processes(self) -> list[tuple[int, int]]:
        return [
            (index, child.pid)
            for index, child in enumerate(self.children)
            if child is not None and child.is_alive()
        ]

    def consumers(self) -> list[tuple[int, int, Slot]]:
        return [(index, pid, self.slots[index]) for index, pid in self.child_processes()]

    def terminate(self, task_id: str, signal_name: str) -> bool:
        """Note the request in the child's slot, then signal the child (it raises in the task;
        ``SIGKILL`` kills it, and the worker settles the task when it reaps the child)."""
        for child, slot in zip(self.children, self.slots, strict=True):
            if child is None or not child.is_alive() or slot.running_task() != task_id:
                continue
            if slot.terminate_request() == (task_id, signal_name):
                return False  # asked already: once per task (and signal)
            slot.request_terminate(task_id, signal_name)
            if slot.running_task() != task_id:
                return False  # it finished meanwhile: the next task must not get the signal
            try:
                os.kill(child.pid, getattr(signal, signal_name))
            except ProcessLookupError:
                return False
            return True
        return False


class ThreadPool(Pool):
    """Consumers in threads of the worker process (I/O-bound tasks; no hard time limits)."""

    name = "threads"

    def __init__(self, target: Target, concurrency: int) -> None:
        super().__init__(target, concurrency)
        self.events = [threading.Event() for _ in range(concurrency)]
        self.slots = [Slot(shared=False) for _ in range(concurrency)]
        self.threads: list[threading.Thread | None] = [None] * concurrency

    def _spawn(self, index: int) -> None:
        self.events[index] = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(index,), name=f"django_tq-consumer-{index}", daemon=True
        )
        thread.start()
        self.threads[index] = thread

    def _run(self, index: int) -> None:
        try:
            self.target(index, self.events[index], self.slots[index])
        finally:
            connections.close_all()

    def start(self) -> None:
        for index in range(self.concurrency):
            self._spawn(index)

    def resize(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"a pool needs at least one consumer, not {concurrency}")
        while len(self.threads) < concurrency:
            self.threads.append(None)
            self.events.append(threading.Event())
            self.slots.append(Slot(shared=False))
        old, self.concurrency = self.concurrency, concurrency
        for index in range(concurrency, len(self.events)):
            self.events[index].set()  # finish the running task, then stop
        for index in range(min(old, concurrency), concurrency):
            if self.threads[index] is None and not self.stopping:
                self._spawn(index)

    def tick(self) -> list[ChildExit]:
        exits = []
        for index, thread in enumerate(self.threads):
            if thread is None or thread.is_alive():
                continue
            exits.append(ChildExit(index=index, pid=None, exitcode=None))
            self.threads[index] = None
            if index < self.concurrency and not self.stopping:
                self.restarts += 1
                self._spawn(index)
        return exits

    def restart(self) -> None:
        for event in self.events:
            event.set()

    def kill(self) -> list[ChildExit]:
        self.stop()  # threads cannot be killed: the process exits without waiting for them
        return []

    def join(self, timeout: float | None) -> bool:
        remaining = _deadline(timeout)
        for thread in self.threads:
            if thread is not None:
                thread.join(remaining())
        return not any(thread is not None and thread.is_alive() for thread in self.threads)

    def processed(self) -> int:
        return sum(int(slot.processed.value) for slot in self.slots)

    def running(self) -> list[Running]:
        return [
            Running(index=index, pid=os.getpid(), task_id=details[0], task_name=details[1])
            for index, slot in enumerate(self.slots)
            if (details := slot.running_details()) is not None
        ]

    def consumers(self) -> list[tuple[int, int, Slot]]:
        return [
            (index, os.getpid(), slot)
            for index, (thread, slot) in enumerate(zip(self.threads, self.slots, strict=True))
            if thread is not None and thread.is_alive()
        ]

    def terminate(self, task_id: str, signal_name: str) -> bool:
        """Raise in the task at its thread's next bytecode (nothing can kill one thread)."""
        for slot in self.slots:
            if slot.running_task() != task_id:
                continue
            if slot.terminate_request() == (task_id, signal_name):
                return False  # asked already: once per task (and signal)
            slot.request_terminate(task_id, signal_name)
            abort.terminate(task_id, signal_name)
            return True
        return False


class SoloPool(ThreadPool):
    """One consumer in the worker's main thread, started again when it ends until stopped."""

    name = "solo"
    runs_in_main_thread = True

    def __init__(self, target: Target, concurrency: int = 1) -> None:
        super().__init__(target, 1)
        self.done = threading.Event()

    def start(self) -> None:
        """Nothing to start: :meth:`run_in_main_thread` runs the consumer."""

    def resize(self, concurrency: int) -> None:
        raise ValueError("the solo pool runs one consumer: use prefork or threads to resize")

    def run_in_main_thread(self) -> None:
        try:
            while not self.stopping:
                self.events[0] = threading.Event()
                self.target(0, self.events[0], self.slots[0])
        finally:
            self.done.set()

    def tick(self) -> list[ChildExit]:
        return []

    def consumers(self) -> list[tuple[int, int, Slot]]:
        return [] if self.done.is_set() else [(0, os.getpid(), self.slots[0])]

    def join(self, timeout: float | None) -> bool:
        return self.done.wait(timeout)


class _Counter:
    """A plain ``.value`` holder, like billiard's shared ``Value``, for in-process consumers."""

    def __init__(self) -> None:
        self.value: Any = 0


POOLS: dict[str, type[Pool]] = {"prefork": PreforkPool, "threads": ThreadPool, "solo": SoloPool}


def make_pool(name: str, target: Target, concurrency: int) -> Pool:
    """Build the pool called ``name``."""
    return POOLS[name](target, concurrency)
