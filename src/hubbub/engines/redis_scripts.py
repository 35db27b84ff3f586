"""The Redis engine's key layout and its Lua scripts: what lives where, and how it changes.

Layout per channel (the ``{…}`` hash tag keeps a channel's keys in one Redis Cluster slot):

* ``<prefix>:meta:{<channel>}``: hash ``e`` (epoch) and ``s`` (top offset); expires
  ``history_meta_ttl`` after the last publication.
* ``<prefix>:stream:{<channel>}``: a Redis stream whose entry ids are ``<offset>-0``, fields
  ``d`` (the packed publication) and ``t`` (publish time, ms); trimmed to ``history_size``,
  entries older than ``history_ttl`` are skipped on read and the key expires with them.
* ``<prefix>:ch:<channel>``: the PUB/SUB channel that carries live publications, joins and leaves.
* ``<prefix>:presence:{<channel>}`` and ``…:presence:exp:{<channel>}``: client id -> packed
  ClientInfo, and client id -> expiry time (sorted set).

Per node (the ``{nodes}`` hash tag keeps them in one slot):

* ``<prefix>:{nodes}``: node uid -> the time its liveness lapses (sorted set).
* ``<prefix>:{nodes}:owned:<uid>``: the presence entries the node added, as
  ``<client id> NUL <channel>``; expires with the entries.
* ``<prefix>:{nodes}:reap:<uid>``: the lock of the one node that reaps a lapsed node.

Appending to the stream and publishing happen in one Lua script, so every publication seen live
is in the stream and offsets follow delivery order. Time comes from Redis (``TIME``), so nodes
agree on expiry whatever their clocks say.

Each script's comment gives its ``KEYS`` and ``ARGV``; durations travel as whole milliseconds
(:func:`ms`). This module is plain text and needs no Redis client.
"""

from __future__ import annotations

import random
import string


def ms(seconds: float) -> int:
    """``seconds`` as the whole milliseconds a script takes; at least 1, a valid Redis TTL."""
    return max(int(seconds * 1000), 1)


def new_epoch() -> str:
    """A fresh stream epoch: eight letters, so that it never contains the ``:`` separator."""
    return "".join(random.choices(string.ascii_letters, k=8))


# KEYS: meta, stream, idempotency key (absent = none: in a Redis Cluster every key a script
#       is given must be in the channel's slot, so there is no placeholder key)
# ARGV: packed publication, history size, history ttl ms, meta ttl ms, pubsub channel,
#       new epoch, idempotency ttl ms, use history ("1"/"0")
PUBLISH = """
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {'dup', seen} end
end
local offset = 0
local epoch = ''
if ARGV[8] == '1' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  epoch = redis.call('HGET', KEYS[1], 'e')
  if not epoch then
    epoch = ARGV[6]
    redis.call('HSET', KEYS[1], 'e', epoch)
  end
  offset = redis.call('HINCRBY', KEYS[1], 's', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 'd', ARGV[1], 't', now)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[5], 'p' .. offset .. ':' .. epoch .. ':' .. ARGV[1])
local result = offset .. ':' .. epoch
if KEYS[3] then
  redis.call('SET', KEYS[3], result, 'PX', ARGV[7])
end
return {'ok', result}
"""

# KEYS: meta, stream
# ARGV: new epoch, meta ttl ms, history ttl ms, start id, end id, count (-1 = all),
#       reverse ("1"/"0"), want publications ("1"/"0")
HISTORY = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local out = {}
if ARGV[8] == '1' then
  local t = redis.call('TIME')
  local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
  local entries
  if ARGV[7] == '1' then
    entries = redis.call('XREVRANGE', KEYS[2], ARGV[5], ARGV[4])
  else
    entries = redis.call('XRANGE', KEYS[2], ARGV[4], ARGV[5])
  end
  local want = tonumber(ARGV[6])
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    local d, ts
    for i = 1, #fields, 2 do
      if fields[i] == 'd' then d = fields[i + 1] elseif fields[i] == 't' then ts = fields[i + 1] end
    end
    if tonumber(ts) > oldest then
      table.insert(out, entry[1])
      table.insert(out, d)
      if want >= 0 and #out / 2 >= want then break end
    end
  end
end
return {epoch, top, out}
"""

# KEYS: meta.  ARGV: the epoch to replace, the new epoch. 1 when it was replaced.
RENEW_EPOCH = """
if redis.call('HGET', KEYS[1], 'e') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'e', ARGV[2])
  return 1
end
return 0
"""

# KEYS: presence hash, expiry zset.  ARGV: none. Drops expired entries, returns the rest.
PRESENCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: presence hash, expiry zset.  ARGV: client id, packed info, ttl ms
ADD_PRESENCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
"""


# KEYS: owned set.  ARGV: member, ttl ms. Records the entry; the set lives as long as its
# longest-lived entry.
OWN = """
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
"""

# KEYS: nodes zset.  ARGV: own uid, lapse ms. Renews the liveness; 1 if it had not lapsed.
KEEP_ALIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if prev and tonumber(prev) > now then return 1 end
return 0
"""

# KEYS: nodes zset.  ARGV: own uid. The uids of the other nodes whose liveness lapsed.
LAPSED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, uid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  if uid ~= ARGV[1] then table.insert(out, uid) end
end
return out
"""

# KEYS: nodes zset, reap lock.  ARGV: lapsed uid, own uid, lock ms.
# 1 when the node is still lapsed and this caller took the lock.
CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > now then return 0 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""

# KEYS: presence hash, expiry zset.  ARGV: client ids. Removes them, returns their infos.
REAP = """
local out = {}
for i = 1, #ARGV do
  local info = redis.call('HGET', KEYS[1], ARGV[i])
  if info then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    table.insert(out, info)
  end
end
return out
"""

# KEYS: nodes zset, owned set.  ARGV: reaped uid. Forgets the node unless it came back.
FORGET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > now then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

REAP_LOCK_MS = 30_000
"""How long a reaper holds a lapsed node; should it die meanwhile, another takes over."""
