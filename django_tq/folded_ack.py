"""One message's ``django://`` ack as SQL, for a write on the same database that runs it too.

A task's final state and the ack of its message are two statements otherwise, on two
connections (the result backend's, the transport's own). On PostgreSQL, where the queue table
and the results share an alias, the result backend runs the ack's ``DELETE`` in the statement
that writes the final state (a writable CTE): one round trip, one commit, and the ack can only
happen with the final state, never without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True, slots=True)
class FoldedAck:
    """The fenced ``DELETE`` that acks one message, and what to call once it has committed."""

    #: the database alias of the queue table (the statement must run there)
    alias: str
    #: ``DELETE FROM … WHERE …`` (no ``RETURNING``): deletes the message while this consumer's
    #: lease holds it, else nothing. A caller may append ``AND <condition>``.
    delete: str
    params: tuple[Any, ...]
    #: tells the transport the message is acked (no round trip); call it after the commit
    settled: Callable[[], None]
