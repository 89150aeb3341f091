"""A reusable publisher: many calls sent in bursts over one connection.

    with add.publisher() as publisher:          # or django_tq.publisher() for mixed tasks
        for x in xs:
            add.apply_async((x, 1), publisher=publisher)

Each ``apply_async(..., publisher=p)`` returns its ``AsyncResult`` at once; the messages wait in
the publisher and are sent together every ``batch_size`` messages and when the block exits
(:meth:`Publisher.flush`): their QUEUED rows in one statement, then one broker round — on
RabbitMQ one wait for the publisher confirms of the whole burst, on ``redis://`` one pipeline,
on ``django://`` one ``INSERT``. A flush raises :class:`~django_tq.exceptions.PublishError`
whose ``failed`` names the ids the broker did not take; :attr:`Publisher.sent` lists the ids it
confirmed. Inside ``transaction.atomic()`` the publishes wait for the commit as usual, and go
out as one burst after it.
"""

from __future__ import annotations

from types import TracebackType

from django_tq.broker import get_broker
from django_tq.broker.retry_policy import RetryPolicy
from django_tq.enqueue import Burst

#: messages a publisher holds before it sends them
DEFAULT_BATCH_SIZE = 500


class Publisher:
    """Collects calls and sends them in bursts (see the module docstring)."""

    def __init__(self, *, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.batch_size = batch_size
        #: the ids of the tasks the broker has confirmed, in the order they were flushed
        self.sent: list[str] = []
        self._bursts: dict[RetryPolicy, Burst] = {}

    def __len__(self) -> int:
        """Return how many messages wait for the next flush."""
        return sum(len(burst) for burst in self._bursts.values())

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # What the block handed over is sent even if the block then failed: each of those
        # calls already returned its id.
        self.flush()

    def burst_for(self, policy: RetryPolicy) -> Burst:
        """Return the burst calls with this retry policy join (``enqueue(burst=…)``)."""
        burst = self._bursts.get(policy)
        if burst is None:
            burst = self._bursts[policy] = Burst(get_broker(), policy)
        return burst

    def added(self) -> None:
        """Note a call handed over: flush once ``batch_size`` messages wait."""
        if len(self) >= self.batch_size:
            self.flush()

    def flush(self) -> list[str]:
        """Send every waiting message now; return the ids the broker confirmed.

        Every burst is sent even if one fails; then the first failure is raised, its
        ``failed`` holding the ids of every message not taken.
        """
        sent: list[str] = []
        failures = []
        for burst in list(self._bursts.values()):
            before = len(burst.confirmed)
            try:
                burst.send()
            except Exception as exc:
                failures.append(exc)
            sent.extend(burst.confirmed[before:])
        self.sent.extend(sent)
        if failures:
            first = failures[0]
            if hasattr(first, "failed"):
                first.failed = tuple(i for e in failures for i in getattr(e, "failed", ()))
            raise first
        return sent


def publisher(*, batch_size: int = DEFAULT_BATCH_SIZE) -> Publisher:
    """Return a :class:`Publisher` for calls of any tasks (``with django_tq.publisher() as p:``)."""
    return Publisher(batch_size=batch_size)
