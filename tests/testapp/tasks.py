"""Tasks the test suite runs in real workers."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import time
import uuid
from typing import Any

from django_tq import task
from tests.testapp.models import Execution, Order


@task
def add(x: int, y: int) -> int:
    return x + y


@task(bind=True)
def who_am_i(self: Any) -> dict[str, Any]:
    return {"id": self.request.id, "retries": self.request.retries, "queue": self.request.queue}


@task(bind=True)
def record(self: Any, label: str = "") -> str:
    """Write one Execution row (the side effect tests count)."""
    Execution.objects.create(task_id=self.request.id, label=label, pid=os.getpid())
    return label


@task(bind=True)
def slow_record(self: Any, seconds: float, label: str = "") -> str:
    """Sleep, then write an Execution row."""
    Execution.objects.create(task_id=self.request.id, label=f"start:{label}", pid=os.getpid())
    time.sleep(seconds)
    Execution.objects.create(task_id=self.request.id, label=f"end:{label}", pid=os.getpid())
    return label


@task(bind=True)
def hang_on_first_delivery(self: Any, label: str = "") -> str:
    """Like ``slow_record``, but only its first delivery hangs (for a minute): a test that kills
    the worker running it always kills it mid-task, however late the test gets to the kill."""
    Execution.objects.create(task_id=self.request.id, label=f"start:{label}", pid=os.getpid())
    if self.request.delivery_count <= 1:
        time.sleep(60)
    Execution.objects.create(task_id=self.request.id, label=f"end:{label}", pid=os.getpid())
    return label


@task
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@task
def echo_types(value: Any) -> Any:
    """Return the value and the names of the types it arrived as."""
    types = {
        dt.datetime: "datetime",
        dt.date: "date",
        dt.time: "time",
        dt.timedelta: "timedelta",
        decimal.Decimal: "decimal",
        uuid.UUID: "uuid",
        bytes: "bytes",
    }
    if isinstance(value, dict):
        return {key: types.get(type(item), type(item).__name__) for key, item in value.items()}
    return types.get(type(value), type(value).__name__)


@task
def order_exists(number: str) -> bool:
    return Order.objects.filter(number=number).exists()


@task
def returns_unserialisable() -> object:
    return object()


@task(queue="other")
def on_other_queue() -> str:
    return "other"


@task(bind=True)
def close_my_connection(self: Any) -> str:
    """Close the task's own DB connection (consumption must not depend on it)."""
    from django.db import connection

    Execution.objects.create(task_id=self.request.id, label="closed-connection", pid=os.getpid())
    connection.close()
    return "closed"


@task(bind=True, acks_late=False)
def early_ack(self: Any) -> int:
    return self.request.delivery_count


@task(bind=True)
def delivery_count(self: Any) -> int:
    return self.request.delivery_count


@task(bind=True, max_retries=2, default_retry_delay=0)
def always_retries(self: Any) -> None:
    Execution.objects.create(
        task_id=self.request.id, label=f"attempt-{self.request.retries}", pid=os.getpid()
    )
    raise self.retry(exc=ConnectionError("flaky"))


@task(
    bind=True,
    autoretry_for=(ConnectionError,),
    max_retries=3,
    retry_backoff=True,
    retry_jitter=False,
)
def flaky_until_third(self: Any) -> int:
    Execution.objects.create(
        task_id=self.request.id, label=f"try-{self.request.retries}", pid=os.getpid()
    )
    if self.request.retries < 2:
        raise ConnectionError("not yet")
    return self.request.retries


@task(bind=True)
def kill_my_process(self: Any) -> None:
    """A poison message: the process running it dies (like a segfault or the OOM killer)."""
    import signal

    Execution.objects.create(task_id=self.request.id, label="poison", pid=os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


@task(bind=True, acks_late=False)
def early_ack_then_die(self: Any) -> None:
    """Acked before it runs, then kill the process running it: it must not run again."""
    import signal

    Execution.objects.create(task_id=self.request.id, label="early-die", pid=os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


@task(bind=True)
def reports_progress(self: Any) -> list[Any]:
    """Record a custom state, then return what a poller would have seen meanwhile."""
    from django_tq import AsyncResult

    self.update_state(state="PROGRESS", meta={"done": 1, "total": 2})
    seen = AsyncResult(self.request.id)
    return [seen.state, seen.info]


@task(bind=True, soft_time_limit=1)
def cleans_up_at_soft_limit(self: Any, seconds: float) -> str:
    """Sleep past the soft limit, clean up when it fires, and re-raise."""
    from django_tq.exceptions import SoftTimeLimitExceeded

    Execution.objects.create(task_id=self.request.id, label="soft:start", pid=os.getpid())
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        Execution.objects.create(task_id=self.request.id, label="soft:cleanup", pid=os.getpid())
        raise
    return "finished"


@task(bind=True, time_limit=1)
def ignores_its_limit(self: Any, seconds: float) -> str:
    """Run past the hard limit without any chance to stop (signals are blocked here)."""
    import signal

    Execution.objects.create(task_id=self.request.id, label="hard:start", pid=os.getpid())
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    Execution.objects.create(task_id=self.request.id, label="hard:end", pid=os.getpid())
    return "finished"


@task(bind=True, unique=("user_id",), unique_ttl=600)
def sync_user(self: Any, user_id: int, label: str = "") -> int:
    """Unique per ``user_id``: write an Execution row."""
    Execution.objects.create(
        task_id=self.request.id, label=f"sync:{user_id}:{label}", pid=os.getpid()
    )
    return user_id


@task(bind=True, unique=True)
def slow_sync(self: Any, user_id: int, seconds: float = 1.0) -> int:
    """Unique on every argument; sleeps so a test can enqueue while it runs."""
    Execution.objects.create(task_id=self.request.id, label=f"slow-sync:{user_id}", pid=os.getpid())
    time.sleep(seconds)
    return user_id


@task(bind=True, unique=True, max_retries=1, default_retry_delay=0)
def unique_retries(self: Any, user_id: int) -> None:
    """Unique, retries once, then fails."""
    Execution.objects.create(
        task_id=self.request.id, label=f"unique-try-{self.request.retries}", pid=os.getpid()
    )
    raise self.retry(exc=ConnectionError("flaky"))


@task(bind=True, rate_limit="5/s")
def limited(self: Any, label: str = "") -> str:
    """At most 5 starts a second across all workers."""
    Execution.objects.create(task_id=self.request.id, label=f"limited:{label}", pid=os.getpid())
    return label


@task(bind=True, rate_limit="5/s", rate_limit_scope="worker")
def limited_per_worker(self: Any, label: str = "") -> str:
    """At most 5 starts a second in each consumer process."""
    Execution.objects.create(task_id=self.request.id, label=f"per-worker:{label}", pid=os.getpid())
    return label


_held_memory: list[bytes] = []


@task(bind=True)
def hold_memory(self: Any, kib: int) -> int:
    """Allocate ``kib`` KiB and keep it (the process's resident memory grows); return the pid."""
    _held_memory.append(b"\x01" * (kib * 1024))  # written, so resident, unlike calloc'd zeros
    Execution.objects.create(task_id=self.request.id, label="hog", pid=os.getpid())
    return os.getpid()


@task
def tsum(numbers: list[int]) -> int:
    """A chord body: the sum of the header's results."""
    return sum(numbers)


@task
def mul(x: int, y: int) -> int:
    return x * y


@task(bind=True)
def record_sum(self: Any, numbers: list[int], label: str = "body") -> int:
    """A chord body that writes an Execution row (counted: it must run exactly once)."""
    Execution.objects.create(task_id=self.request.id, label=label, pid=os.getpid())
    return sum(numbers)


@task(bind=True)
def slow_add(self: Any, x: int, y: int, seconds: float = 0.0) -> int:
    """A header task that takes a while, writing a row when it starts."""
    Execution.objects.create(task_id=self.request.id, label=f"start:{x}", pid=os.getpid())
    time.sleep(seconds)
    return x + y


@task
def on_error(request: Any, exc: BaseException, traceback: str) -> None:
    """A new-style errback: gets the failed task's request, exception and traceback."""
    Execution.objects.create(
        task_id=request.id, label=f"errback:{type(exc).__name__}:{exc}", pid=os.getpid()
    )


@task
def on_error_old_style(task_id: str) -> str:
    """An old-style errback: gets the failed task's id."""
    Execution.objects.create(task_id=task_id, label="old-errback", pid=os.getpid())
    return task_id


@task(bind=True)
def record_call(self: Any, *args: Any, **kwargs: Any) -> None:
    """Write the arguments it was called with (whatever they are) as an Execution row."""
    label = f"call:{', '.join(repr(a) for a in args)}|{', '.join(sorted(kwargs))}"
    task_id = self.request.id or "(called inline)"
    Execution.objects.create(task_id=task_id, label=label[:255], pid=os.getpid())


@task(bind=True)
def replaced_by_add(self: Any, x: int) -> None:
    """Replace itself with add(x, 100)."""
    from tests.testapp.tasks import add

    self.replace(add.s(x, 100))


@task
def ignored() -> None:
    """Raise Ignore: nothing is recorded for this task."""
    from django_tq.exceptions import Ignore

    raise Ignore()


@task(bind=True, reject_on_worker_lost=False)
def kill_my_process_once(self: Any) -> None:
    """Kill the process running it; ``reject_on_worker_lost=False``: fail instead of rerunning."""
    import signal

    Execution.objects.create(task_id=self.request.id, label="lost", pid=os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


@task(bind=True)
def replaced_by_chord(self: Any, n: int) -> None:
    """Replace itself with a chord of ``n`` additions summed by ``tsum``."""
    from django_tq import chord

    self.replace(chord((add.s(i, i) for i in range(n)), tsum.s()))


@task(bind=True)
def runs_until_stopped(self: Any, seconds: float, label: str = "", swallow: str = "") -> str:
    """Sleep in short steps for up to ``seconds``, writing a row for each way it can end.

    ``swallow="exceptions"``: catch every ``Exception`` inside the loop, as careless task code
    does (terminate must end the task anyway); ``"everything"``: every ``BaseException`` too
    (only ``SIGKILL`` ends it), noting each one it swallowed.
    """
    from django_tq.exceptions import SoftTimeLimitExceeded

    Execution.objects.create(task_id=self.request.id, label=f"start:{label}", pid=os.getpid())
    deadline = time.monotonic() + seconds
    caught = BaseException if swallow == "everything" else Exception
    try:
        while time.monotonic() < deadline:
            try:
                time.sleep(0.05)
            except caught as exc:
                if not swallow:
                    raise
                if not isinstance(exc, Exception):
                    Execution.objects.create(
                        task_id=self.request.id, label=f"swallowed:{label}", pid=os.getpid()
                    )
    except SoftTimeLimitExceeded:
        Execution.objects.create(task_id=self.request.id, label=f"soft:{label}", pid=os.getpid())
        raise
    finally:
        Execution.objects.create(task_id=self.request.id, label=f"finally:{label}", pid=os.getpid())
    Execution.objects.create(task_id=self.request.id, label=f"end:{label}", pid=os.getpid())
    return label


@task(bind=True)
def polls_is_aborted(self: Any, seconds: float, label: str = "") -> str:
    """Loop for up to ``seconds`` and stop early once ``self.is_aborted()`` says so."""
    Execution.objects.create(task_id=self.request.id, label=f"start:{label}", pid=os.getpid())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if self.is_aborted():
            Execution.objects.create(
                task_id=self.request.id, label=f"aborted:{label}", pid=os.getpid()
            )
            return "aborted"
        time.sleep(0.05)
    Execution.objects.create(task_id=self.request.id, label=f"end:{label}", pid=os.getpid())
    return "finished"


@task(bind=True)
async def async_runs_until_stopped(self: Any, seconds: float, label: str = "") -> str:
    """An ``async def`` task: await short sleeps for up to ``seconds``; note a cancellation."""
    import asyncio

    task_id = self.request.id
    await Execution.objects.acreate(task_id=task_id, label=f"start:{label}", pid=os.getpid())
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if self.is_aborted() and label.startswith("poll"):
                await Execution.objects.acreate(
                    task_id=task_id, label=f"aborted:{label}", pid=os.getpid()
                )
                return "aborted"
    except asyncio.CancelledError:
        await Execution.objects.acreate(
            task_id=task_id, label=f"cancelled:{label}", pid=os.getpid()
        )
        raise
    await Execution.objects.acreate(task_id=task_id, label=f"end:{label}", pid=os.getpid())
    return label
