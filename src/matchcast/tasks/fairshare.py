"""Fair share between API keys on the bulk lane: each key's batch chunks wait in a sub-queue of their own.

The bulk lane consumes ``ml.bulk.0`` .. ``ml.bulk.{BULK_SHARDS - 1}`` next to ``ml`` and ``ml.bulk``, and the broker
hands a consumer of several queues their messages in turn (kombu's Redis transport rotates the queues it pops
after each message; RabbitMQ delivers from every queue a consumer holds as its prefetch frees). A key with
50,000 predictions queued then holds one queue of several: another key's batch waits for at most the chunks
already handed to the worker, not for the whole backlog.

Which queue a key's chunks go to is decided in Redis, atomically, before the chunks are sent (so nothing accepted
lives only in the API's memory: the chunks themselves are on the broker, confirmed, before the caller hears 202):

- a key that still has work keeps its shard (its chunks stay in order, and one key never takes two turns);
- a key without work is given the least loaded shard (tasks not yet done), so keys share a shard only when
  more keys than shards have work at once.

Each chunk's share is recorded under its chunk (message) id; the worker that finishes a chunk, or the collector
that dead-letters it, releases it (once: a redelivered chunk releases nothing twice). The same numbers are the
per-key backlog the API exports (``async_backlog{key}``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from matchcast.tasks.keys import FAIR_BACKLOG_KEY, FAIR_CHUNK_KEY, FAIR_LOAD_KEY, FAIR_SHARD_KEY
from matchcast.tasks.names import BULK_SHARD_QUEUES, BULK_SHARDS

ANONYMOUS = "-"  # the key of batches submitted without API keys (MATCHCAST_AUTH=off)
_KEYS = (FAIR_BACKLOG_KEY, FAIR_SHARD_KEY, FAIR_LOAD_KEY)

# KEYS: backlog, shard, load. ARGV: key, shards, ttl, chunk prefix, then chunk id, size, chunk id, size, ...
# A chunk already recorded (the same call sent again after its answer was lost) is counted once: it keeps the
# shard it was given, and the backlog is not raised twice.
_ASSIGN = """
local key, shards, ttl, prefix = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local total, fresh, recorded = 0, {}, nil
for i = 5, #ARGV, 2 do
  local share = redis.call('GET', prefix .. ARGV[i])
  if share then
    recorded = recorded or string.match(share, ' (%d+) %d+$')
  else
    total = total + tonumber(ARGV[i + 1])
    table.insert(fresh, i)
  end
end
local shard = recorded or redis.call('HGET', KEYS[2], key)
local backlog = tonumber(redis.call('HGET', KEYS[1], key) or '0')
if (not recorded) and ((not shard) or backlog <= 0 or tonumber(shard) >= shards) then
  local least = nil
  for s = 0, shards - 1 do
    local load = tonumber(redis.call('HGET', KEYS[3], tostring(s)) or '0')
    if least == nil or load < least then shard, least = tostring(s), load end
  end
  redis.call('HSET', KEYS[2], key, shard)
end
if total > 0 then
  redis.call('HINCRBY', KEYS[1], key, total)
  redis.call('HINCRBY', KEYS[3], shard, total)
end
for _, i in ipairs(fresh) do
  redis.call('SET', prefix .. ARGV[i], key .. ' ' .. shard .. ' ' .. ARGV[i + 1], 'EX', ttl)
end
for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, ttl) end
return tonumber(shard)
"""

# KEYS: backlog, shard, load. ARGV: chunk prefix, then chunk ids. Returns the tasks released.
_RELEASE = """
local prefix, released = ARGV[1], 0
for i = 2, #ARGV do
  local ck = prefix .. ARGV[i]
  local share = redis.call('GET', ck)
  if share then
    redis.call('DEL', ck)
    local key, shard, n = string.match(share, '^(.*) (%d+) (%d+)$')
    n = tonumber(n)
    if redis.call('HINCRBY', KEYS[1], key, -n) <= 0 then
      redis.call('HDEL', KEYS[1], key)
      redis.call('HDEL', KEYS[2], key)
    end
    if redis.call('HINCRBY', KEYS[3], shard, -n) <= 0 then redis.call('HDEL', KEYS[3], shard) end
    released = released + n
  end
end
return released
"""


def shard_queue(shard: int) -> str:
    """The bulk sub-queue of ``shard``."""
    return BULK_SHARD_QUEUES[shard % BULK_SHARDS]


def _backlog(raw: dict[Any, Any]) -> dict[str, int]:
    out = {}
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        out[key] = max(0, int(v))
    return out


class FairShare:
    """The API's side: which shard a key's chunks go to (one round trip), undo, and the per-key backlog."""

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self.client, self.ttl_s = client, ttl_s
        self._assign = client.register_script(_ASSIGN)
        self._release = client.register_script(_RELEASE)

    async def assign(self, key: str | None, chunks: Sequence[tuple[str, int]]) -> str:
        """The queue for these ``(chunk id, tasks)`` of ``key`` (its shard while it has work, else the least
        loaded), their shares recorded; raises ``RedisError`` if the backend is away."""
        args: list[Any] = [key or ANONYMOUS, BULK_SHARDS, self.ttl_s, FAIR_CHUNK_KEY]
        for chunk_id, size in chunks:
            args += [chunk_id, size]
        shard = await self._assign(keys=_KEYS, args=args)
        return shard_queue(int(shard))

    async def release(self, chunk_ids: Sequence[str]) -> None:
        """Give back the shares of chunks that were never sent (best effort: they expire anyway)."""
        if chunk_ids:
            with contextlib.suppress(RedisError):
                await self._release(keys=_KEYS, args=[FAIR_CHUNK_KEY, *chunk_ids])

    async def backlog(self) -> dict[str, int]:
        """Tasks not yet done on the bulk lane, by API key id (``-``: no key)."""
        return _backlog(await self.client.hgetall(FAIR_BACKLOG_KEY))


def release_chunks(client: redis.Redis, chunk_ids: Sequence[str]) -> int:
    """The worker's side: a chunk is done (or dead-lettered): release its share, once. The tasks released."""
    script = client.register_script(_RELEASE)
    return int(script(keys=_KEYS, args=[FAIR_CHUNK_KEY, *chunk_ids]))
