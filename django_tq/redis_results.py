"""Result records in Redis, written through the raw client of a Django Redis cache.

``CacheBackend`` (``RESULT_BACKEND="django-cache"``) uses this when its cache is django-redis's
(its ``DefaultClient``, exceptions not ignored) or Django's own ``RedisCache``; other caches keep
the cache API. A record is the cache key the cache itself would use, holding the record's JSON
(``serialization.to_json``) as the raw value: no pickle, and ``date_created`` then ``state`` as
its first two keys, so the ``STARTED`` script can read them without decoding the record.

Per task: one ``SET`` at enqueue, one script call at ``STARTED`` (it refuses a finished task and
keeps the ``QUEUED`` record's ``date_created`` on the server: no read on the client), one ``SET``
at the end. A record written by the cache API (before this module, or by another cache client)
is read through the cache API; the script leaves it to the caller, which merges it as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache

from django_tq import serialization, states

#: the head of every record written here: ``date_created`` comes first, ``state`` second
HEAD = '{"date_created":'

#: ``STARTED`` in one round trip. KEYS[1] the record; ARGV[1] the JSON of the ``date_created``
#: to use when no record is stored; ARGV[2] the record's JSON after ``date_created`` (from the
#: comma on); ARGV[3] the expiry in ms, or "" for none. Returns 0 if the task finished, the
#: ``date_created`` JSON written if the record was written, or ``{stored}`` when the stored
#: record is one the caller must merge itself (not QUEUED, or not written by this module).
STARTED_SCRIPT = """
local ready = {READY}
local created = ARGV[1]
local stored = redis.call('GET', KEYS[1])
if stored then
  local was, state = string.match(stored, '^{"date_created":(.-),"state":"([^"]*)",')
  if state == nil then return {stored} end
  if ready[state] then return 0 end
  if state ~= QUEUED then return {stored} end
  created = was
end
local record = '{"date_created":' .. created .. ARGV[2]
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], record)
else
  redis.call('SET', KEYS[1], record, 'PX', ARGV[3])
end
return created
""".replace(
    "READY", ", ".join(f'["{state}"] = true' for state in sorted(states.READY_STATES))
).replace("QUEUED", f'"{states.QUEUED}"')

#: a record's keys after ``date_created`` and ``state``, with their defaults (``ResultData``'s)
DEFAULTS: dict[str, Any] = {
    "task_id": "",
    "task_name": "",
    "result": None,
    "traceback": "",
    "meta": None,
    "args": None,
    "kwargs": None,
    "queue": "",
    "priority": None,
    "worker": "",
    "retries": 0,
    "delivery_count": 0,
    "parent_id": None,
    "root_id": None,
    "group_id": None,
    "eta": None,
    "date_started": None,
    "date_done": None,
    "extra": {},
}


def new_record(state: str) -> dict[str, Any]:
    """Return an empty record in ``state``, its keys in the order written here."""
    return {"date_created": None, "state": state, **DEFAULTS, "extra": {}}


def encode(record: dict[str, Any]) -> str:
    """Return ``record`` (``date_created`` and ``state`` its first keys) as stored JSON."""
    return serialization.to_json(record)


class RedisResults:
    """The records of one Redis cache, through its raw redis-py client."""

    def __init__(self, client: Any, cache: Any, *, timeout: float | None) -> None:
        self.client = client
        self.make_key = cache.make_key
        #: the expiry in ms (``None``: none), as the ``PX`` of a ``SET``
        self.px = int(timeout * 1000) if timeout is not None else None
        self._started = client.register_script(STARTED_SCRIPT)

    @classmethod
    def of(cls, cache: Any, *, timeout: float | None) -> RedisResults | None:
        """Return the records of ``cache`` if it is a Redis cache this module can write to."""
        if timeout is not None and timeout <= 0:
            return None  # the cache API's meaning (expire at once) is kept there
        if isinstance(cache, DjangoRedisCache):
            return cls(cache._cache.get_client(write=True), cache, timeout=timeout)
        client: Any = getattr(cache, "client", None)
        kind = type(client)
        if (
            kind.__module__ == "django_redis.client.default"
            and kind.__qualname__ == "DefaultClient"
            and not getattr(cache, "_ignore_exceptions", True)
        ):
            return cls(client.get_client(write=True), cache, timeout=timeout)
        return None

    def write(self, key: str, record: dict[str, Any], *, keep_existing: bool = False) -> None:
        """Write ``record`` at ``key``; with ``keep_existing``, only if nothing is stored there."""
        self.client.set(self.make_key(key), encode(record), px=self.px, nx=keep_existing)

    def write_many(self, writes: Iterable[tuple[str, dict[str, Any], bool]]) -> None:
        """Write ``(key, record, keep_existing)`` triples in one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            for key, record, keep_existing in writes:
                pipe.set(self.make_key(key), encode(record), px=self.px, nx=keep_existing)
            pipe.execute()

    def start(self, key: str, record: dict[str, Any]) -> Literal[False] | list[bytes] | bytes:
        """Write ``record`` (state ``STARTED``) unless the stored one forbids it.

        Returns False if the stored record is a finished task's (nothing written), the stored
        ``date_created`` the record now has (JSON text, written), or a list holding the stored
        raw value the caller must merge and write itself (nothing written).
        """
        text = encode(record)
        created = serialization.to_json(record["date_created"])
        rest = text[len(HEAD) + len(created) :]
        px = "" if self.px is None else str(self.px)
        reply = self._started(keys=[self.make_key(key)], args=[created, rest, px])
        if reply == 0:
            return False
        return reply

    def read(self, key: str) -> bytes | None:
        """Return the raw value stored at ``key`` (``None`` if there is none)."""
        value: bytes | None = self.client.get(self.make_key(key))
        return value

    @staticmethod
    def is_ours(raw: bytes) -> bool:
        """Return whether ``raw`` is a record written here (not by the cache API)."""
        return raw.startswith(HEAD.encode())
