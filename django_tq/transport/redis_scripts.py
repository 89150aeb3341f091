"""The Lua scripts of the ``redis://`` transport: every change of a queue's state is one of them.

Each script runs atomically in Redis on the keys of one queue (see :mod:`django_tq.transport.redis`
for the data layout). The comment above a script names the keys and arguments it takes, in order;
:class:`~django_tq.transport.redis.QueueKeys` builds the key lists. Times are epoch milliseconds on
Redis' own clock (``TIME``), so workers' clocks never matter.
"""

from __future__ import annotations

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: payloads, delayed, ready list of the message's priority, wake
# ARGV: id, payload, not_before (epoch ms, 0 = now), wake cap
# (The queue registry is written once per process, when the queue is declared. Redis' clock is
# read only for a message with a not_before: most publishes are for now. A wake token is pushed
# only while fewer than the cap wait: the same tokens as a push and a trim to the cap, and with
# a backlog nobody drains the list, so a publish then writes two keys, not four.)
PUT_SCRIPT = (
    """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local not_before = tonumber(ARGV[3])
local later = false
if not_before > 0 then
"""
    + _NOW
    + """
  later = not_before > now
end
if later then
  redis.call('ZADD', KEYS[2], not_before, ARGV[1])
else
  redis.call('RPUSH', KEYS[3], ARGV[1])
end
if redis.call('LLEN', KEYS[4]) < tonumber(ARGV[4]) then
  redis.call('LPUSH', KEYS[4], '1')
end
return 1
"""
)

# KEYS: payloads, deliveries, leases, owners, delayed, wake, ready:9 … ready:0 (KEYS[7..16])
# ARGV: limit, lease (ms), owner, wake cap
# Returns: {id, payload, delivery count}* followed by ms until the next delayed message or lease
# deadline is due (-1: none).
CLAIM_SCRIPT = (
    _NOW
    + """
local function ready_key(id)
  return KEYS[16 - tonumber(string.sub(id, 1, 1))]
end
local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, #due - 1)
  for _, id in ipairs(due) do
    redis.call('RPUSH', ready_key(id), id)
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
if #expired > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, #expired - 1)
  for i = #expired, 1, -1 do
    redis.call('HDEL', KEYS[4], expired[i])
    redis.call('LPUSH', ready_key(expired[i]), expired[i])
  end
end
local limit = tonumber(ARGV[1])
local deadline = now + tonumber(ARGV[2])
local result = {}
local taken = 0
local last = 7
for k = 7, 16 do
  last = k
  while taken < limit do
    local id = redis.call('LPOP', KEYS[k])
    if not id then break end
    local payload = redis.call('HGET', KEYS[1], id)
    if payload then
      taken = taken + 1
      result[#result + 1] = id
      result[#result + 1] = payload
      result[#result + 1] = redis.call('HINCRBY', KEYS[2], id, 1)
      redis.call('ZADD', KEYS[3], deadline, id)
      redis.call('HSET', KEYS[4], id, ARGV[3])
    end
  end
  if taken >= limit then break end
end
if taken >= limit then
  for k = last, 16 do
    if redis.call('LLEN', KEYS[k]) > 0 then
      redis.call('LPUSH', KEYS[6], '1')
      redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[4]) - 1)
      break
    end
  end
end
local next_due = -1
for _, key in ipairs({KEYS[5], KEYS[3]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local due_in = math.max(0, tonumber(first[2]) - now)
    if next_due < 0 or due_in < next_due then next_due = due_in end
  end
end
result[#result + 1] = next_due
return result
"""
)

# KEYS: payloads, deliveries, leases, owners   ARGV: owner prefix, ids…
# Deletes only the messages whose lease an owner starting with the prefix still holds: an ack
# from a worker whose lease expired and was taken over (or given back) changes nothing.
ACK_SCRIPT = """
local acked = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local owner = redis.call('HGET', KEYS[4], id)
  if owner and string.sub(owner, 1, #ARGV[1]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
    acked = acked + 1
  end
end
return acked
"""

# KEYS: leases, owners   ARGV: owner, lease (ms), ids…
RENEW_SCRIPT = (
    _NOW
    + """
local deadline = now + tonumber(ARGV[2])
local renewed = 0
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[1] then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
    renewed = renewed + 1
  end
end
return renewed
"""
)

_RELEASE_BODY = """
local function ready_key(id)
  return KEYS[14 - tonumber(string.sub(id, 1, 1))]
end
local released = 0
for i = #ids, 1, -1 do
  local id = ids[i]
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  if undeliver(id) then redis.call('HINCRBY', KEYS[3], id, -1) end
  redis.call('LPUSH', ready_key(id), id)
  released = released + 1
end
if released > 0 then
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[3]) - 1)
end
return released
"""

# KEYS: leases, owners, deliveries, wake, ready:9 … ready:0 (KEYS[5..14])
# ARGV: owner, undeliver (0/1), wake cap, ids…  (releases only the ids ``owner`` holds)
RELEASE_SCRIPT = (
    """
local undeliver_all = ARGV[2] == '1'
local function undeliver(id) return undeliver_all end
local ids = {}
for i = 4, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[1] then ids[#ids + 1] = ARGV[i] end
end
"""
    + _RELEASE_BODY
)

# KEYS: as RELEASE_SCRIPT   ARGV: owner prefix, (unused), wake cap, running ids…
# Every released message but the running ones was only prefetched: its delivery is taken back.
RELEASE_PREFIX_SCRIPT = (
    """
local running = {}
for i = 4, #ARGV do running[ARGV[i]] = true end
local function undeliver(id) return not running[id] end
local ids = {}
local owners = redis.call('HGETALL', KEYS[2])
for i = 1, #owners, 2 do
  if string.sub(owners[i + 1], 1, #ARGV[1]) == ARGV[1] then ids[#ids + 1] = owners[i] end
end
"""
    + _RELEASE_BODY
)

# KEYS: payloads, deliveries, delayed, ready:9 … ready:0 (KEYS[4..13])   Returns: messages removed
PURGE_SCRIPT = """
local removed = 0
local function drop(ids)
  for _, id in ipairs(ids) do
    removed = removed + redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
  end
end
for k = 4, 13 do
  drop(redis.call('LRANGE', KEYS[k], 0, -1))
  redis.call('DEL', KEYS[k])
end
drop(redis.call('ZRANGE', KEYS[3], 0, -1))
redis.call('DEL', KEYS[3])
return removed
"""


# Celery's producers write kombu's Redis layout: one list per queue and priority step (LPUSH,
# oldest at the tail). A worker consuming them (``--accept-celery``) moves them into the queue's
# own structure, atomically, before it claims: a message is in one place or the other, never
# lost and never in both.
# KEYS: payloads, adopted-counter, ready:9 … ready:0 (KEYS[3..12]), then kombu's lists, the most
# urgent first (KEYS[13..])
# ARGV: limit, then the priority (0-9, ours) of each kombu list, in KEYS' order
# Returns how many messages were moved.
ADOPT_SCRIPT = """
local limit = tonumber(ARGV[1])
local moved = 0
for i = 13, #KEYS do
  local priority = tonumber(ARGV[i - 11])
  while moved < limit do
    local payload = redis.call('RPOP', KEYS[i])
    if not payload then break end
    local id = priority .. ':celery-' .. redis.call('INCR', KEYS[2])
    redis.call('HSET', KEYS[1], id, payload)
    redis.call('RPUSH', KEYS[12 - priority], id)
    moved = moved + 1
  end
end
return moved
"""


SCRIPTS = {
    "put": PUT_SCRIPT,
    "claim": CLAIM_SCRIPT,
    "ack": ACK_SCRIPT,
    "renew": RENEW_SCRIPT,
    "release": RELEASE_SCRIPT,
    "release_prefix": RELEASE_PREFIX_SCRIPT,
    "purge": PURGE_SCRIPT,
    "adopt": ADOPT_SCRIPT,
}
