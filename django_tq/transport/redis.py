"""``redis://``: a leased kombu transport over Redis, written on redis-py and Lua.

Why not kombu's own Redis transport: its QoS emulates acks with two MULTI/EXEC transactions and a
new client object per message (the throughput limit), and brings an unacked message back when a
*visibility timeout* passes, whether or not the task is still running (duplicated long tasks and
ETAs). Here a claimed message carries a *lease* instead: the worker renews it while the task runs,
so a live worker's messages never come back, and a dead worker's come back when the lease runs out
(or at once, when the worker's parent releases the leases of a child that died).

Data layout, per queue (every key of a queue shares the hash tag ``{queue}``)::

    tq:{queue}:ready:0 … ready:9   lists of message ids, one per priority (9 is served first),
                                   FIFO within a priority: publish RPUSHes, claims LPOP,
                                   released messages go back to the head
    tq:{queue}:delayed             sorted set id -> ``not_before`` (epoch ms); claims move due
                                   ids to their ready list
    tq:{queue}:payloads            hash id -> the kombu message as JSON
    tq:{queue}:deliveries          hash id -> deliveries so far (a claim adds one, giving back a
                                   prefetched message that never ran takes it back)
    tq:{queue}:leases              sorted set id -> lease deadline (epoch ms, Redis' clock)
    tq:{queue}:owners              hash id -> owner id of the lease (``host:pid:n:random``)
    tq:{queue}:wake                list of wake-up tokens idle consumers BLPOP
    tq:{queue}:adopted             counter of the messages taken from kombu's lists (below)
    tq:queues                      set of every queue name (to release a dead process's leases)

A message id is ``"<priority>:<process prefix>-<counter>"`` (:func:`new_message_id`), so a script
can requeue it to the right list without reading its payload. A delivery tag is
``"<queue>/<id>"``: acks and renewals need no per-process table to find the queue.

Every change of state is one Lua script call (EVALSHA on one reused client per channel; the scripts
are in :mod:`django_tq.transport.redis_scripts`):

* publish: store the payload, push the id to its ready list (or ``delayed``), push a wake token;
* claim (up to the free prefetch window at once): move due delayed ids and expired leases to the
  ready lists, pop the highest-priority ids, lease them to this channel, count the delivery, and
  return payloads, counts and how long until the next delayed message or lease deadline is due.
  When ready messages remain after a full claim, it pushes a wake token for the next idle
  consumer ("baton passing"), so one token per publish is enough;
* ack: delete payload, count and lease; renew: move the deadline of leases this channel owns;
  release: push owned ids back to the head of their ready list. Acks are batched
  (``ack_batch_seconds``, 50 ms by default): pipelined in front of the next claim or idle
  ``BLPOP`` in the same round trip, or sent by a flusher thread when neither comes in time.

An idle consumer blocks in ``BLPOP`` on the wake lists of its queues, bounded by the next due
time the last claim reported (a delayed message, or a lease a dead consumer stopped renewing). With
one queue the claim is pipelined behind the ``BLPOP``, so Redis runs it as soon as the wake-up
arrives: enqueue-to-start is one publish and one round trip, not a poll interval. A consumer whose
last claim found the queue empty goes straight to that wait (its queued acks in front), without a
claim of its own first: one round trip per idle cycle. The wait's commands go to a connection the
channel holds for them, without redis-py's pipeline (which would re-send a claim after a
connection error).

An ack is durable once it reaches Redis (the message is gone), at most ``ack_batch_seconds`` after
the task finished; it deletes only what this channel's lease still covers (fenced: a holder whose
lease expired and was taken over changes nothing). Releases and renewals touch only the caller's
own leases.

With ``adopt_celery`` (``tqworker --accept-celery``), each claim first moves what Celery producers
wrote to kombu's own lists of the queue (``queue``, ``queue\x06\x163`` …) into these keys, in one
script (``ADOPT_SCRIPT``), and an idle wait lasts at most :data:`CELERY_POLL_SECONDS`.

Needs Redis 6.0+ (fractional ``BLPOP`` timeouts) on a single primary; a queue's keys share a hash
slot, but ``tq:queues`` and multi-queue waits do not, so Redis Cluster is not supported.
``rediss://`` (:class:`SecureTransport`) connects with TLS; so does ``redis://…?ssl_cert_reqs=…``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterable
from queue import Empty
from time import monotonic
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from django_tq.transport.leased import LeasedChannel, LeasedTransport
from django_tq.transport.redis_scripts import SCRIPTS

try:
    import redis
    from redis import exceptions as redis_errors
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImproperlyConfigured(
        "TQ['BROKER_URL'] names a redis:// broker, but redis-py is not installed: "
        "pip install 'django-tq[redis]'."
    ) from exc

#: key holding the names of every queue this transport has seen
QUEUES_KEY = "tq:queues"
#: priorities, highest first (the order claims pop and scripts receive the ready lists in)
PRIORITIES = tuple(range(9, -1, -1))
#: kombu's Redis transport (what Celery producers use): a queue's list for priority step ``n`` is
#: ``queue + SEP + n`` (``queue`` itself for 0); its default steps, where 0 is served first
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
#: with ``adopt_celery``, the longest an idle consumer waits before it looks at kombu's lists
#: again (Celery's LPUSH wakes nobody)
CELERY_POLL_SECONDS = 1.0


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = uuid.uuid4().hex[:16], itertools.count(1)


_id_prefix = ""
_id_counter = itertools.count(1)
_new_id_prefix()
# a forked child (a prefork pool's) must not hand out its parent's ids again
os.register_at_fork(after_in_child=_new_id_prefix)


def new_message_id(priority: int) -> str:
    """Return a message id unique across processes: 64 random bits per process and a counter.

    A publish costs no ``uuid4`` of its own (the task id is not reused: a retry publishes the
    same task id while its first message is still leased, and a caller may pass any id).
    """
    return f"{priority}:{_id_prefix}-{next(_id_counter):x}"


class QueueKeys:
    """The Redis key names of one queue."""

    __slots__ = (
        "adopted", "delayed", "deliveries", "kombu", "leases", "owners", "payloads", "ready",
        "wake",
    )  # fmt: skip

    def __init__(self, queue: str) -> None:
        base = f"tq:{{{queue}}}:"
        self.payloads = base + "payloads"
        self.deliveries = base + "deliveries"
        self.leases = base + "leases"
        self.owners = base + "owners"
        self.delayed = base + "delayed"
        self.wake = base + "wake"
        #: ready lists, highest priority first
        self.ready = [f"{base}ready:{priority}" for priority in PRIORITIES]
        #: counts the messages taken from kombu's lists (their ids here)
        self.adopted = base + "adopted"
        #: kombu's lists of this queue, most urgent first, each with the priority it gets here
        self.kombu = [
            (queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEP}{step}", 9 - step)
            for step in KOMBU_PRIORITY_STEPS
        ]

    def ready_for(self, priority: int) -> str:
        """Return the ready list of ``priority``."""
        return self.ready[9 - priority]

    def for_claim(self) -> list[str]:
        """Return the keys ``CLAIM_SCRIPT`` takes, in its order (see :mod:`.redis_scripts`)."""
        return [
            self.payloads,
            self.deliveries,
            self.leases,
            self.owners,
            self.delayed,
            self.wake,
            *self.ready,
        ]

    def for_adopt(self) -> tuple[list[str], list[int]]:
        """Return the keys and priorities ``ADOPT_SCRIPT`` takes (see :mod:`.redis_scripts`)."""
        lists = [name for name, _priority in self.kombu]
        return [self.payloads, self.adopted, *self.ready, *lists], [p for _n, p in self.kombu]

    def for_release(self) -> list[str]:
        """Return the keys ``RELEASE_SCRIPT`` and ``RELEASE_PREFIX_SCRIPT`` take, in their order."""
        return [self.leases, self.owners, self.deliveries, self.wake, *self.ready]

    def all(self) -> list[str]:
        """Return every key of the queue."""
        return self.for_claim()


def _hiredis_packer() -> Callable[[tuple[Any, ...]], bytes] | None:
    """Return hiredis' command packer, or None (then :func:`pack_commands` packs in Python)."""
    try:
        # import-inside: optional extra: hiredis, which the redis extra installs
        from hiredis import pack_command
    except ImportError:
        return None
    return pack_command


_hiredis_pack = _hiredis_packer()


def pack_commands(commands: list[tuple[Any, ...]]) -> bytes:
    """Return ``commands`` (of ``str``, ``bytes`` and ``int`` arguments) in Redis' protocol.

    What redis-py's packer writes, without its per-argument type dispatch (with hiredis too it
    encodes each argument in Python first): under cProfile that was a third of a publish's
    client CPU for the put script's eleven arguments.
    """
    if _hiredis_pack is not None:
        return b"".join([_hiredis_pack(command) for command in commands])
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def raise_first_error(replies: list[Any]) -> None:
    """Raise the first ``ResponseError`` among ``replies`` (as :meth:`Channel._send` returns them)."""
    for reply in replies:
        if isinstance(reply, redis_errors.ResponseError):
            raise reply


def split_tag(tag: str) -> tuple[str, str]:
    """Split a delivery tag into ``(queue, message id)``."""
    queue, _, message_id = tag.rpartition("/")
    return queue, message_id


def epoch_milliseconds(iso: str | None) -> int:
    """Return an ISO datetime (naive means UTC) as epoch milliseconds; ``None`` gives 0."""
    if not iso:
        return 0
    when = dt.datetime.fromisoformat(iso)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def database_number(virtual_host: Any) -> int:
    """Return the Redis database number named by the URL path (``/7`` -> 7; none -> 0)."""
    if isinstance(virtual_host, int):
        return virtual_host
    text = str(virtual_host or "").strip("/")
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise ImproperlyConfigured(
            f"A redis:// broker URL's path is a database number, not {virtual_host!r}."
        )


class Channel(LeasedChannel):
    """A channel over one Redis database, through one reused, pooled redis-py client."""

    #: seconds a socket read may block before redis-py gives up (longer than ``max_wait``)
    socket_timeout: float | None = 10.0
    #: the longest one idle ``BLPOP`` blocks (the caller loops)
    max_wait: float = 5.0
    #: connections the channel's pool may open (a claim/ack thread and the lease renewer)
    max_connections: int = 8
    #: seconds between redis-py health checks of an idle pooled connection (0: off)
    health_check_interval: float = 0
    #: wake tokens kept per queue when nobody waits for them
    wake_tokens: int = 16
    #: connect with TLS even when the URL has no ``ssl_*`` option (``rediss://``)
    use_tls: bool = False
    #: also consume what Celery producers write to kombu's lists of the consumed queues (set by
    #: a subscription that accepts Celery messages: ``tqworker --accept-celery``)
    adopt_celery: bool = False
    #: replicas that must hold a published message before the publish returns (``WAIT``): with
    #: a replicated primary (Sentinel), a message the primary took but never replicated would
    #: be lost when the primary dies; 0 trusts the primary alone
    replica_acks: int = 0
    #: seconds a publish waits for ``replica_acks`` replicas before it counts as failed
    replica_ack_timeout: float = 1.0
    #: acks wait up to this long to travel with the next claim or idle wait (0: one round trip
    #: per ack, as before); on a backlog a claim of k messages carries the last k acks
    ack_batch_seconds: float = 0.05
    from_transport_options = (
        *LeasedChannel.from_transport_options,
        "socket_timeout",
        "max_wait",
        "max_connections",
        "health_check_interval",
        "wake_tokens",
        "replica_acks",
        "replica_ack_timeout",
    )

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        #: the connection scripts run on: one per channel, used by one thread at a time, from a
        #: pool of its own whose reads give up after the connect timeout (a script takes
        #: milliseconds: a reply that long overdue means the link is gone, and a publish must
        #: fail within BROKER_CONNECTION_TIMEOUT, not wait out ``socket_timeout``)
        self._script_connection: Any = None
        self._script_pool: redis.ConnectionPool | None = None
        self._script_lock = threading.Lock()
        #: the connection idle waits block on (``BLPOP``), held by the consuming thread
        self._wait_connection: Any = None
        self._keys: dict[str, QueueKeys] = {}
        #: queue -> monotonic time the next delayed message or lease deadline is due
        self._next_due: dict[str, float] = {}
        #: queues whose last claim took fewer messages than it could: seen empty
        self._drained: set[str] = set()

    # -- the client ---------------------------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        """Return this channel's redis-py client (created on first use)."""
        if self._client is None:
            client = self._create_client()
            self._scripts = {
                name: client.register_script(source) for name, source in SCRIPTS.items()
            }
            self._client = client
        return self._client

    def _run(self, script: str, keys: list[str], args: Iterable[Any] = ()) -> Any:
        """Run one of ``SCRIPTS`` (EVALSHA; loaded again if Redis lost its script cache).

        On this channel's own connection, spoken to directly: the hot path (every publish, ack
        and claim) skips redis-py's per-command pool checkout, retry wrapper and hooks.
        """
        return self._run_scripts([(script, keys, args)])[0]

    def _run_many(
        self,
        script: str,
        calls: list[tuple[list[str], Iterable[Any]]],
        *,
        then: tuple[Any, ...] | None = None,
    ) -> list[Any]:
        """Run ``script`` once per ``(keys, args)``, pipelined: one round trip for them all.

        Return the scripts' replies in order; ``then`` is a command pipelined behind them (its
        reply comes last).
        """
        return self._run_scripts([(script, keys, args) for keys, args in calls], then=then)

    def _run_scripts(
        self,
        calls: list[tuple[str, list[str], Iterable[Any]]],
        *,
        then: tuple[Any, ...] | None = None,
    ) -> list[Any]:
        """Run each ``(script, keys, args)`` in order, pipelined: one round trip for them all.

        When Redis does not know a script (a fresh or restarted server, ``SCRIPT FLUSH``), only
        the calls it refused run again once it is loaded, with ``then`` behind them: the others
        have run. Re-sending them too would run a claim twice, and the first claim's messages,
        leased to this channel, would wait for their lease to expire (on a new server the
        claim of ``[ack, claim]`` ran while the never-used ack script was refused).
        """
        client = self.client
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", self._scripts[script].sha, len(keys), *keys, *args)
            for script, keys, args in calls
        ]
        if then is not None:
            commands.append(then)
        with self._script_lock:
            if self._script_connection is None:
                if self._script_pool is None:
                    self._script_pool = self._connection_pool(self._script_pool_params())
                connection = self._script_pool.make_connection()
                # connect() first: a Sentinel-managed connection asks the sentinels where the
                # primary is only there (a send on a fresh one would go to localhost:6379)
                connection.connect()
                self._script_connection = connection
            connection = self._script_connection
            try:
                replies = self._send(connection, commands)
                refused = [
                    index
                    for index, reply in enumerate(replies[: len(calls)])
                    if isinstance(reply, redis_errors.NoScriptError)
                ]
                if refused:
                    for script in {calls[index][0] for index in refused}:
                        client.script_load(self._scripts[script].script)
                    again = [commands[index] for index in refused]
                    if then is not None:
                        again.append(then)
                    retried = self._send(connection, again)
                    for index, reply in zip(refused, retried, strict=False):
                        replies[index] = reply
                    if then is not None:
                        replies[-1] = retried[-1]
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                self._script_connection = None  # the next call connects afresh (a new primary)
                connection.disconnect()
                raise
        raise_first_error(replies)
        return replies

    @staticmethod
    def _send(connection: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read every reply; an error reply is returned as
        its ``ResponseError`` in its place (the connection stays usable)."""
        connection.send_packed_command([pack_commands(commands)])
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
        return replies

    def _pool_params(self) -> dict[str, Any]:
        """Return the redis-py connection parameters this channel's URL and options give."""
        conninfo = self.connection.client
        params: dict[str, Any] = {
            "host": conninfo.hostname or "127.0.0.1",
            "port": conninfo.port or Transport.default_port,
            "db": database_number(conninfo.virtual_host),
            "username": conninfo.userid or None,
            "password": conninfo.password or None,
            "socket_connect_timeout": conninfo.connect_timeout,
            "socket_timeout": self.socket_timeout,
            "socket_keepalive": True,
            "health_check_interval": self.health_check_interval,
            "max_connections": self.max_connections,
            "decode_responses": True,
        }
        if self._tls():
            params["connection_class"] = redis.SSLConnection
            if isinstance(conninfo.ssl, dict):
                params.update(conninfo.ssl)  # ssl_cert_reqs, ssl_ca_certs… from the URL query
        return params

    def _tls(self) -> bool:
        """Return whether this channel connects with TLS (``rediss://`` or ``ssl`` options)."""
        return bool(self.connection.client.ssl or self.use_tls)

    def _script_pool_params(self) -> dict[str, Any]:
        """The parameters of the scripts' connection: reads bounded by the connect timeout."""
        params = self._pool_params()
        bound = float(self.connection.client.connect_timeout or 4.0)
        if self.replica_acks:  # a WAIT pipelined behind a publish may take its own timeout
            bound = max(bound, float(self.replica_ack_timeout) + 1.0)
        if params["socket_timeout"] is not None:
            bound = min(bound, float(params["socket_timeout"]))
        return {**params, "socket_timeout": bound}

    def _connection_pool(self, params: dict[str, Any]) -> redis.ConnectionPool:
        """Return the pool the client draws connections from (one server: a plain pool)."""
        return redis.ConnectionPool(**params)

    def _create_client(self) -> redis.Redis:
        return redis.Redis(connection_pool=self._connection_pool(self._pool_params()))

    def keys_for(self, queue: str) -> QueueKeys:
        """Return the key names of ``queue``."""
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys(queue)
        return keys

    # -- publishing and queue administration --------------------------------------------------
    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        self._put_many([(queue, message)])

    def _put_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """Run the put script once per message, in one pipeline (one round trip).

        With ``replica_acks``, one ``WAIT`` pipelined behind the whole burst: every message of
        it is on that many replicas when the replies come back, or the burst fails.
        """
        calls: list[tuple[list[str], Iterable[Any]]] = []
        for queue, message in messages:
            priority = self._get_message_priority(message)
            not_before = epoch_milliseconds(message.get("properties", {}).get("not_before"))
            keys = self.keys_for(queue)
            calls.append(
                (
                    [keys.payloads, keys.delayed, keys.ready_for(priority), keys.wake],
                    [new_message_id(priority), json.dumps(message), not_before,
                     self.wake_tokens],
                )
            )  # fmt: skip
        replicas = int(self.replica_acks)
        wait = ("WAIT", replicas, int(float(self.replica_ack_timeout) * 1000)) if replicas else None
        replies = self._run_many("put", calls, then=wait)
        if wait is not None and int(replies[-1]) < replicas:
            # Not lost yet, but not safe either: the publisher retries (at least once) or fails.
            # The builtin TimeoutError (an OSError, so a connection error): its repr keeps the text.
            raise TimeoutError(
                f"{int(replies[-1])} of {replicas} replicas acknowledged the message(s) within "
                f"{self.replica_ack_timeout} s (transport option replica_acks)"
            )

    def _size(self, queue: str) -> int:
        return int(self.client.hlen(self.keys_for(queue).payloads))

    def _purge(self, queue: str) -> int:
        keys = self.keys_for(queue)
        return int(
            self._run("purge", keys=[keys.payloads, keys.deliveries, keys.delayed, *keys.ready])
        )

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        self.client.sadd(QUEUES_KEY, queue)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return bool(self.client.sismember(QUEUES_KEY, queue))

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any
    ) -> None:
        """Delete the queue's keys, whether or not this process declared its bindings."""
        if if_empty and self._size(queue):
            return
        self._delete(queue)
        self.state.queue_bindings_delete(queue)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        pipeline = self.client.pipeline()
        pipeline.delete(*self.keys_for(queue).all())
        pipeline.srem(QUEUES_KEY, queue)
        pipeline.execute()

    # -- claiming and leases ------------------------------------------------------------------
    @property
    def _lease_milliseconds(self) -> int:
        return max(1, int(float(self.lease_seconds) * 1000))

    def _claim(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """Claim up to ``limit`` messages of ``queue``; the queued acks travel in front of it."""
        keys = self.keys_for(queue)
        acked = self.take_acks()
        calls = self._ack_calls(acked)
        if self.adopt_celery:
            adopt_keys, priorities = keys.for_adopt()
            calls.append(("adopt", adopt_keys, [limit, *priorities]))
        calls.append(("claim", keys.for_claim(), self._claim_args(limit)))
        try:
            replies = self._run_scripts(calls)
        except BaseException:
            self.give_back_acks(acked)
            raise
        return self._claimed(queue, replies[-1], limit)

    def _ack_calls(
        self, tags: list[Any], owner_prefix: str | None = None
    ) -> list[tuple[str, list[str], Iterable[Any]]]:
        """Return the ack script calls (one per queue) that delete ``tags``, fenced by owner."""
        prefix = owner_prefix or self.owner
        calls: list[tuple[str, list[str], Iterable[Any]]] = []
        for queue, ids in self._by_queue(tags).items():
            keys = self.keys_for(queue)
            calls.append(
                ("ack", [keys.payloads, keys.deliveries, keys.leases, keys.owners], [prefix, *ids])
            )
        return calls

    def _claim_args(self, limit: int) -> list[Any]:
        return [limit, self._lease_milliseconds, self.owner, self.wake_tokens]

    def _claim_limit(self) -> int:
        """Return how many messages a claim may take now (the free prefetch window)."""
        window = self.qos.can_consume_max_estimate()
        return self.claim_batch if window is None else max(1, min(window, self.claim_batch))

    def _claimed(self, queue: str, reply: list[Any], limit: int) -> list[dict[str, Any]]:
        """Turn a ``CLAIM_SCRIPT`` reply into raw payloads; note when to look again, and whether
        the claim found the queue empty (it took fewer than ``limit``)."""
        next_due = int(reply[-1])
        if next_due >= 0:
            self._next_due[queue] = monotonic() + next_due / 1000
        else:
            self._next_due.pop(queue, None)
        if (len(reply) - 1) // 3 < limit:
            self._drained.add(queue)
        else:
            self._drained.discard(queue)
        return [
            self._payload(queue, reply[index], reply[index + 1], int(reply[index + 2]))
            for index in range(0, len(reply) - 1, 3)
        ]

    def _payload(
        self, queue: str, message_id: str, payload: str, delivery_count: int
    ) -> dict[str, Any]:
        raw: dict[str, Any] = json.loads(payload)
        properties = raw.setdefault("properties", {})
        properties["delivery_tag"] = f"{queue}/{message_id}"
        properties["delivery_count"] = delivery_count
        if delivery_count > 1:
            raw["redelivered"] = True
        return raw

    def _by_queue(self, tags: Iterable[Any]) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = defaultdict(list)
        for tag in tags:
            queue, message_id = split_tag(str(tag))
            grouped[queue].append(message_id)
        return grouped

    def _ack(self, tags: list[Any], owner_prefix: str) -> None:
        self._run_scripts(self._ack_calls(tags, owner_prefix))

    def _release(self, tags: list[Any], *, undeliver: bool) -> None:
        for queue, ids in self._by_queue(tags).items():
            keys = self.keys_for(queue)
            self._run(
                "release",
                keys=keys.for_release(),
                args=[self.owner, "1" if undeliver else "0", self.wake_tokens, *ids],
            )

    def _renew(self, tags: list[Any]) -> None:
        for queue, ids in self._by_queue(tags).items():
            keys = self.keys_for(queue)
            self._run(
                "renew",
                keys=[keys.leases, keys.owners],
                args=[self.owner, self._lease_milliseconds, *ids],
            )

    def release_owner_prefix(self, prefix: str, running: Collection[Any] = ()) -> int:
        client = self.client
        running_ids = self._by_queue(list(running))
        released = 0
        for queue in sorted(client.smembers(QUEUES_KEY)):
            keys = self.keys_for(queue)
            name = queue.decode() if isinstance(queue, bytes) else queue
            released += int(
                self._run(
                    "release_prefix",
                    keys=keys.for_release(),
                    args=[prefix, "0", self.wake_tokens, *running_ids.get(name, [])],
                )
            )
        return released

    def delayed_messages(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        client = self.client
        due: list[tuple[float, str, dict[str, Any]]] = []
        for queue in sorted(client.smembers(QUEUES_KEY)):
            keys = self.keys_for(queue)
            waiting = client.zrange(keys.delayed, 0, limit - 1, withscores=True)
            if not waiting:
                continue
            payloads = client.hmget(keys.payloads, [message_id for message_id, _ in waiting])
            for (_, score), payload in zip(waiting, payloads, strict=True):
                if payload is not None:  # acked or purged in between
                    due.append((float(score), queue, json.loads(payload)))
        due.sort(key=lambda item: item[0])
        return [(queue, envelope) for _, queue, envelope in due[:limit]]

    def leased_payload(self, prefix: str, tag: Any) -> dict[str, Any] | None:
        queue, message_id = split_tag(str(tag))
        keys = self.keys_for(queue)
        pipeline = self.client.pipeline(transaction=False)
        pipeline.hget(keys.owners, message_id)
        pipeline.hget(keys.payloads, message_id)
        pipeline.hget(keys.deliveries, message_id)
        owner, payload, count = pipeline.execute()
        if owner is None or payload is None or not str(owner).startswith(prefix):
            return None
        return self._payload(queue, message_id, payload, int(count or 1))

    # -- waiting ------------------------------------------------------------------------------
    def _get_and_deliver(self, queue: str, callback: Callable[..., Any]) -> None:
        """Deliver the next buffered message of ``queue`` (kombu's consuming loop calls this).

        With nothing buffered, a queue its last claim found empty is not claimed again here:
        the idle wait's own claim, pipelined behind its ``BLPOP`` (with the queued acks in
        front), is next — one round trip per idle cycle instead of two. A message that came
        meanwhile left a wake token, so that ``BLPOP`` returns at once; and its claim runs even
        when it times out. (``basic_get`` still claims through :meth:`_get`.)
        """
        if not self._buffers.get(queue) and self._waits_with_a_claim(queue):
            raise Empty()
        super()._get_and_deliver(queue, callback)

    def _waits_with_a_claim(self, queue: str) -> bool:
        """Return whether :meth:`wait` will claim ``queue`` next, and it is known to be empty."""
        if queue not in self._drained or self.adopt_celery or len(self._active_queues) != 1:
            return False
        due = self._next_due.get(queue)
        if due is not None and due <= monotonic():
            return False
        # the transport waits on its first consuming channel (LeasedTransport.drain_events)
        waiting = next((c for c in self.connection.channels if c._consumers), None)
        return waiting is self

    def wait(self, timeout: float) -> None:
        """Block in ``BLPOP`` on the consumed queues' wake lists, up to the next due time.

        With one queue, the claim is pipelined behind the ``BLPOP``: Redis runs it the moment
        the wake-up arrives, so a woken consumer has its messages after one round trip. The
        commands go straight to a connection this channel holds for its waits (as the scripts
        do: :meth:`_send`), with no redis-py pipeline around them: it would retry the whole
        pipeline after a connection error, claim included, and strand what the first claim
        leased.
        """
        queues = list(self._active_queues)
        if timeout <= 0:
            return
        if len(queues) != 1 or not self.qos.can_consume():
            self.flush_acks()  # idle: nothing to carry them with (one queue: the pipeline below)
        if not queues or not self.qos.can_consume():
            time.sleep(min(timeout, self.polling_interval))  # nothing could be delivered anyway
            return
        now = monotonic()
        for queue in queues:
            due = self._next_due.get(queue)
            if due is not None:
                timeout = min(timeout, due - now)
        if timeout <= 0:
            return  # something is due: the claim that follows carries the queued acks
        timeout = min(max(timeout, 0.01), self._longest_wait())
        if self.adopt_celery:
            timeout = min(timeout, CELERY_POLL_SECONDS)
        self.client  # noqa: B018 - the scripts' SHAs are known once the client is built
        wake_keys = [self.keys_for(queue).wake for queue in queues]
        blpop = ("BLPOP", *wake_keys, f"{timeout:.3f}")
        if len(queues) > 1:
            self._run_wait([blpop])
            return
        queue = queues[0]
        # the queued acks first: Redis runs them before the BLPOP blocks
        acked = self.take_acks()
        ack_calls = self._ack_calls(acked)
        claim_keys = self.keys_for(queue).for_claim()
        limit = self._claim_limit()
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", self._scripts[script].sha, len(keys), *keys, *args)
            for script, keys, args in ack_calls
        ]
        commands.append(blpop)
        commands.append(
            ("EVALSHA", self._scripts["claim"].sha, len(claim_keys), *claim_keys,
             *self._claim_args(limit))
        )  # fmt: skip
        try:
            replies = self._run_wait(commands)
        except BaseException:
            self.give_back_acks(acked)
            raise
        if any(isinstance(reply, Exception) for reply in replies[: len(ack_calls)]):
            # not run (a script Redis lost): sent again with the next round trip (an ack that
            # did run deletes nothing the second time)
            self.give_back_acks(acked)
        refused = {
            "ack" if index < len(ack_calls) else "claim"
            for index, reply in enumerate(replies)
            if isinstance(reply, redis_errors.NoScriptError)
        }
        for script in refused:  # the next wait finds them (a refused claim took nothing)
            self.client.script_load(self._scripts[script].script)
        reply = replies[-1]
        if not isinstance(reply, Exception):
            claimed = self._claimed(queue, reply, limit)
            if claimed:
                self._buffers.setdefault(queue, deque()).extend(claimed)
        raise_first_error([r for r in replies if not isinstance(r, redis_errors.NoScriptError)])

    def _longest_wait(self) -> float:
        """Return how long one ``BLPOP`` may block: ``max_wait``, and well within the socket
        timeout (a read that outlasts it counts as a lost connection)."""
        if self.socket_timeout is None:
            return float(self.max_wait)
        return max(0.01, min(float(self.max_wait), float(self.socket_timeout) / 2))

    def _run_wait(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` on this channel's waiting connection; return the replies (errors in
        place). Only the consuming thread waits, so the connection needs no lock; a broken one is
        dropped, and the next wait takes a fresh one from the pool."""
        connection = self._wait_connection
        if connection is None:
            connection = self._wait_connection = self.client.connection_pool.get_connection()
        try:
            return self._send(connection, commands)
        except BaseException:
            # whatever interrupted it (a lost link, a timeout, a signal's exception), replies may
            # still be on their way: the connection cannot be trusted with another command
            self._drop_wait_connection()
            raise

    def _drop_wait_connection(self) -> None:
        connection, self._wait_connection = self._wait_connection, None
        if connection is None:
            return
        connection.disconnect()
        pool = self._client.connection_pool if self._client is not None else None
        if pool is not None:
            pool.release(connection)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._drop_wait_connection()
            client, self._client = self._client, None
            connection, self._script_connection = self._script_connection, None
            self._script_pool = None
            if connection is not None:
                connection.disconnect()
            if client is not None:
                client.connection_pool.disconnect()


class Transport(LeasedTransport):
    """The ``redis://`` transport."""

    Channel = Channel
    driver_type = "redis"
    driver_name = "redis"
    default_port = 6379
    connection_errors = (
        *LeasedTransport.connection_errors,
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        redis_errors.ReadOnlyError,
        OSError,
    )
    channel_errors = (
        *LeasedTransport.channel_errors,
        redis_errors.ResponseError,
        redis_errors.DataError,
        redis_errors.InvalidResponse,
    )

    def driver_version(self) -> str:
        return str(redis.__version__)


class SecureChannel(Channel):
    """A channel that always connects with TLS (certificates verified unless the URL says not)."""

    use_tls = True


class SecureTransport(Transport):
    """The ``rediss://`` transport: :class:`Transport` over TLS.

    kombu drops the URL scheme once it has a transport class, so ``rediss://`` needs a class of
    its own; a ``redis://`` URL with ``ssl_cert_reqs=…`` in its query string connects with TLS too.
    """

    Channel = SecureChannel
