"""Task states, as in Celery, plus ``QUEUED`` (recorded at enqueue) and ``DEAD`` (dead-lettered)."""

from __future__ import annotations

PENDING = "PENDING"  #: unknown id (never recorded)
QUEUED = "QUEUED"  #: recorded at enqueue, waiting for a worker (possibly with an ETA)
RECEIVED = "RECEIVED"  #: a worker holds the message
STARTED = "STARTED"  #: running
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
RETRY = "RETRY"  #: failed, will run again
REVOKED = "REVOKED"
DEAD = "DEAD"  #: dead-lettered: undecodable, unknown task, poison, bad signature

ALL_STATES = frozenset({PENDING, QUEUED, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED, DEAD})
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED, DEAD})
UNREADY_STATES = frozenset({PENDING, QUEUED, RECEIVED, STARTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED, DEAD})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED, DEAD})

CHOICES = [(state, state.title()) for state in sorted(ALL_STATES)]


def is_ready(state: str) -> bool:
    """Return whether ``state`` is final."""
    return state in READY_STATES
