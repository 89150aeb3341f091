"""The shared machinery of kombu virtual transports whose messages are leased, not held.

kombu's virtual QoS keeps unacked messages in the consumer's memory and re-publishes them on
close (duplicates), and its ``drain_events`` sleeps a fixed polling interval. Here the store
(a table, or Redis) is the source of truth instead:

* a claim takes up to the free prefetch window at once and leases each message to this channel
  (``lease_owner`` + an expiry); claimed messages wait in a local buffer until delivered;
* ``ack`` deletes the message from the store (with ``ack_batch_seconds``, together with the
  channel's next round trip: :mod:`django_tq.transport.ack_batch`), ``reject(requeue=True)`` and
  ``close()`` release the lease so the message is visible again at once;
* :meth:`LeasedChannel.renew_leases` extends every lease the channel holds (buffered and running);
  the worker calls it from a timer while tasks run, so a live worker's messages never come back;
* a consumer that dies stops renewing: its messages come back when the lease expires;
* idle consumers wait with :meth:`LeasedChannel.wait` (LISTEN/NOTIFY, a blocking pop, or a short
  poll), not kombu's one-second sleep.

Subclasses fill ``_claim``, ``_ack``, ``_release``, ``_renew``, ``wait`` and the usual
``_put``/``_size``/``_purge``.
"""

from __future__ import annotations

import base64
import itertools
import os
import socket
import threading
import uuid
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import virtual

from django_tq.outgoing import Outgoing
from django_tq.transport.ack_batch import AckBatch

_owner_counter = itertools.count(1)


def owner_prefix(pid: int | None = None, hostname: str | None = None) -> str:
    """Return the prefix of every lease owner id of process ``pid`` on ``hostname``."""
    return f"{hostname or socket.gethostname()}:{pid or os.getpid()}:"


def new_owner_id() -> str:
    """Return a lease owner id unique to this process and channel."""
    return f"{owner_prefix()}{next(_owner_counter)}:{uuid.uuid4().hex[:8]}"


class LeaseQoS(virtual.QoS):
    """QoS whose unacked messages live in the store under a lease, not in memory."""

    restore_at_shutdown = True

    def ack(self, delivery_tag: Any) -> None:
        self.channel.ack_leases([delivery_tag])
        self._delivered.pop(delivery_tag, None)

    def settled(self, delivery_tag: Any) -> None:
        """Forget ``delivery_tag``: acked already, by a statement of someone else's (a
        :class:`~django_tq.folded_ack.FoldedAck`), so nothing is sent to the store."""
        self._delivered.pop(delivery_tag, None)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if requeue:
            self.channel.release_leases([delivery_tag])
        else:
            self.channel.ack_leases([delivery_tag])
        self._delivered.pop(delivery_tag, None)

    def reject_unstarted(self, delivery_tag: Any) -> None:
        """Make a delivered message whose task never started visible again, uncounted."""
        self.channel.release_leases([delivery_tag], undeliver=True)
        self._delivered.pop(delivery_tag, None)

    def restore_unacked(self) -> None:
        tags = list(self._delivered)
        self._delivered.clear()
        if tags:
            self.channel.release_leases(tags)

    def restore_unacked_once(self, stderr: Any = None) -> None:
        if getattr(self._delivered, "restored", False):
            return
        try:
            self.restore_unacked()
        finally:
            self._delivered.restored = True

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: expired leases are visible to every claim."""

    def delivered_tags(self) -> list[Any]:
        """Return the tags delivered to the consumer and not yet acked."""
        return list(self._delivered)


class LeasedChannel(virtual.Channel):
    """A virtual channel over a store with leased claims, batch claims and a wake-up wait."""

    QoS = LeaseQoS
    do_restore = False
    #: seconds a claim leases a message for (``transport_options["lease_seconds"]``)
    lease_seconds: float = 60.0
    #: the most messages one claim takes (``transport_options["claim_batch"]``)
    claim_batch: int = 32
    #: seconds between polls when the store has no wake-up signal
    polling_interval: float = 0.1
    #: the longest an ack waits to travel with the channel's next round trip (0: each ack is
    #: its own round trip, sent before ``ack()`` returns); a store that folds queued acks into
    #: its claims (:meth:`take_acks`) sets a default
    ack_batch_seconds: float = 0.0
    #: a claim may take up to ``claim_batch`` messages, more than the free prefetch window, while
    #: the queue's previous claim came back full and its messages lasted less than this many
    #: seconds (a deep backlog of short tasks: fewer, bigger claims; the extra messages wait
    #: leased in the buffer, about this long's worth of work). 0: never more than the window
    deep_claim_seconds: float = 0.0
    from_transport_options = (
        *virtual.Channel.from_transport_options,
        "lease_seconds",
        "claim_batch",
        "polling_interval",
        "ack_batch_seconds",
        "deep_claim_seconds",
    )

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.owner = new_owner_id()
        self._buffers: dict[str, deque[dict[str, Any]]] = {}
        self._lock = threading.RLock()
        #: per queue, the last claim: when (monotonic), how many it asked for, how many came
        self._last_claims: dict[str, tuple[float, int, int]] = {}
        delay = float(self.ack_batch_seconds or 0)
        self._acks = AckBatch(self._send_acks, delay) if delay > 0 else None

    # -- the store contract -------------------------------------------------------------------
    def _claim(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """Lease up to ``limit`` visible messages of ``queue``; return their raw payloads.

        Each payload's ``properties`` carries ``delivery_tag`` (the store's key) and
        ``delivery_count`` (deliveries including this one).
        """
        raise NotImplementedError

    def _ack(self, tags: list[Any], owner_prefix: str) -> None:
        """Delete the messages ``tags`` whose lease an owner id starting with ``owner_prefix``
        still holds (this channel's own :attr:`owner`, or a dead process's prefix): a lease that
        expired and was taken over is fenced, its late ack deletes nothing."""
        raise NotImplementedError

    def _release(self, tags: list[Any], *, undeliver: bool) -> None:
        raise NotImplementedError

    def _renew(self, tags: list[Any]) -> None:
        raise NotImplementedError

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds or until a message may be available."""
        import time

        time.sleep(min(timeout, self.polling_interval))

    # -- publishing ----------------------------------------------------------------------------
    def put_messages(self, burst: Sequence[Outgoing]) -> None:
        """Store django_tq messages: the kombu envelope, built once, body kept as JSON text.

        What kombu's ``Producer.publish`` would store, minus its base64 round of the body (a
        binary body, i.e. pickle or compressed, is still base64-encoded). The store writes the
        whole burst at once (:meth:`_put_many`).
        """
        self._put_many([(item.queue, self._envelope(item)) for item in burst])

    def _envelope(self, item: Outgoing) -> dict[str, Any]:
        body: str | bytes = item.wire.body
        body_encoding = None
        if isinstance(body, bytes):
            body, body_encoding = base64.b64encode(body).decode("ascii"), "base64"
        properties: dict[str, Any] = {
            "priority": item.priority or 0,
            "delivery_mode": 2,
            "body_encoding": body_encoding,
            "delivery_info": {
                "exchange": item.exchange or "",
                "routing_key": item.routing_key or item.queue,
                "queue": item.queue,
            },
        }
        if item.not_before:
            properties["not_before"] = item.not_before
        return {
            "body": body,
            "content-encoding": "utf-8" if body_encoding is None else "binary",
            "content-type": item.wire.content_type,
            "headers": item.wire.headers,
            "properties": properties,
        }

    def _put_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """Store ``(queue, envelope)`` pairs; stores override it to write them in one go."""
        for queue, message in messages:
            self._put(queue, message)

    # -- kombu's channel contract ------------------------------------------------------------
    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        buffer = self._buffers.get(queue)
        if not buffer:
            limit = self._claim_size(queue)
            with self._lock:
                claimed = self._claim(queue, limit)
            if self.deep_claim_seconds:
                self._last_claims[queue] = (monotonic(), limit, len(claimed))
            if not claimed:
                raise Empty()
            buffer = self._buffers.setdefault(queue, deque())
            buffer.extend(claimed)
        return buffer.popleft()

    def _claim_size(self, queue: str) -> int:
        """Return how many messages the next claim of ``queue`` asks for.

        The free prefetch window (at most ``claim_batch``); with ``deep_claim_seconds``, twice
        the last claim's size (up to ``claim_batch``) when that claim came back full and its
        messages were used up within ``deep_claim_seconds``.
        """
        batch = int(self.claim_batch)
        window = self.qos.can_consume_max_estimate()
        limit = batch if window is None else max(1, min(window, batch))
        last = self._last_claims.get(queue) if self.deep_claim_seconds else None
        if last is not None:
            at, asked, got = last
            if got >= asked and monotonic() - at < float(self.deep_claim_seconds):
                limit = max(limit, min(batch, 2 * asked))
        return limit

    def _restore(self, message: Any) -> None:
        self.release_leases([message.delivery_tag])

    # -- lease operations used by QoS and the worker -----------------------------------------
    def ack_leases(self, tags: Iterable[Any], owner_prefix: str | None = None) -> None:
        """Delete acked messages from the store, if this channel (or ``owner_prefix``: a dead
        process of ours, see :func:`owner_prefix`) still holds their lease.

        With ``ack_batch_seconds``, this channel's own acks are queued and sent with its next
        round trip (within that many seconds); a dead process's are sent at once.
        """
        tags = list(tags)
        if not tags:
            return
        if owner_prefix is None and self._acks is not None:
            self._acks.add(tags)
            return
        with self._lock:
            self._ack(tags, owner_prefix or self.owner)

    def _send_acks(self, tags: list[Any]) -> None:
        with self._lock:
            self._ack(tags, self.owner)

    def take_acks(self) -> list[Any]:
        """Remove and return the queued acks, for the store to send with its next command.

        The caller must send them (fenced by :attr:`owner`) or :meth:`give_back_acks` them.
        """
        return self._acks.take() if self._acks is not None else []

    def give_back_acks(self, tags: list[Any]) -> None:
        """Queue acks again that :meth:`take_acks` returned and the store did not get."""
        if self._acks is not None:
            self._acks.give_back(tags)

    def flush_acks(self) -> None:
        """Send the queued acks now (a no-op without ``ack_batch_seconds``)."""
        if self._acks is not None:
            self._acks.flush()

    def release_leases(self, tags: Iterable[Any], *, undeliver: bool = False) -> None:
        """Make delivered messages visible again at once; their delivery still counts unless
        ``undeliver`` (their task never started)."""
        tags = list(tags)
        if tags:
            with self._lock:
                self._release(tags, undeliver=undeliver)

    def buffered(self) -> list[tuple[str, dict[str, Any]]]:
        """Return ``(queue, raw message)`` of each message claimed and not delivered yet."""
        # list() of a dict view or a deque is one C call: another thread (the lease renewer,
        # the worker's questions) gets a consistent snapshot while the consumer mutates them.
        return [(queue, raw) for queue, b in list(self._buffers.items()) for raw in list(b)]

    def _buffered_tags(self) -> list[Any]:
        return [raw["properties"]["delivery_tag"] for _, raw in self.buffered()]

    def release_buffered(self) -> int:
        """Give back claimed messages not yet delivered (they do not count as deliveries)."""
        tags = self._buffered_tags()
        self._buffers.clear()
        if tags:
            with self._lock:
                self._release(tags, undeliver=True)
        return len(tags)

    def held_tags(self) -> list[Any]:
        """Return the tags of every message this channel holds a lease on."""
        return self._buffered_tags() + self.qos.delivered_tags()

    def release_owner_prefix(self, prefix: str, running: Collection[Any] = ()) -> int:
        """Release every lease whose owner id starts with ``prefix`` (a dead process's).

        Only the messages in ``running`` were being executed; the others were prefetched, so
        their delivery is taken back (a poison message must not drag its neighbours towards
        ``MAX_DELIVERIES``).
        """
        raise NotImplementedError

    def delayed_messages(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """Return up to ``limit`` messages waiting for their ``not_before``, soonest first, as
        ``(queue, kombu envelope)`` (for ``tqinspect scheduled``; not on a hot path)."""
        raise NotImplementedError

    def leased_payload(self, prefix: str, tag: Any) -> dict[str, Any] | None:
        """Return the raw message ``tag`` if a lease owner id starting with ``prefix`` holds it.

        A worker's parent reads the message a child died running, to settle it (a terminated
        task) instead of giving it back. None when the message is gone or leased by another.
        """
        raise NotImplementedError

    def renew_leases(self) -> int:
        """Extend the lease of every held message; return how many.

        Queued acks are sent first: a message acked here is no longer held, so its lease is no
        longer renewed, and it must leave the store before that lease runs out.
        """
        self.flush_acks()
        tags = self.held_tags()
        if tags:
            with self._lock:
                self._renew(tags)
        return len(tags)

    def close(self) -> None:
        if not self.closed:
            try:
                self.flush_acks()  # finished work first: it must not come back
            except Exception:  # the store may be gone; the messages' leases expire
                pass
            if self._acks is not None:
                self._acks.close()
            try:
                self.release_buffered()
            except Exception:  # the store may be gone; leases expire by themselves
                pass
        super().close()


class LeasedTransport(virtual.Transport):
    """A virtual transport that waits on its channel instead of sleeping a polling interval."""

    Channel = LeasedChannel
    polling_interval = None
    implements = virtual.Transport.implements.extend(
        asynchronous=False, exchange_type=frozenset(["direct"])
    )

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            remaining = 1.0 if deadline is None else deadline - monotonic()
            if remaining <= 0:
                raise TimeoutError()
            consuming = [channel for channel in self.channels if channel._consumers]
            if not consuming:
                raise TimeoutError()
            consuming[0].wait(remaining)
