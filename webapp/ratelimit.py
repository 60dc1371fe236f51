"""Per-user, per-method rate limits: GCRA (a token bucket kept as one timestamp) evaluated
atomically in Redis, so every webapp process shares the same budget.

A limit of N per minute allows a burst of N, then one call per 60/N seconds. Unlike a fixed
window there is no boundary at which 2N calls get through.
"""

from __future__ import annotations

import redis.asyncio as aioredis

# KEYS[1]: the bucket; KEYS[2] (optional): a gate, a key whose presence refuses the call
# before it is counted; ARGV[1]: ms per call; ARGV[2]: burst (calls)
# returns 0 when allowed, -1 when the gate is shut, else the ms to wait
_GCRA = """
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return tat - tolerance - now
end
redis.call('SET', KEYS[1], tat + interval, 'PX', tolerance + interval + 1000)
return 0
"""


class RateLimiter:
    def __init__(self, client: aioredis.Redis, per_minute: int) -> None:
        self.per_minute = max(1, per_minute)
        self._script = client.register_script(_GCRA)

    async def wait_ms(self, key: str, per_minute: int | None = None,
                      gate: str | None = None) -> int:
        """0 if the call may go ahead (and is counted); else how long until it may.
        ``per_minute`` overrides the default budget (a method's rate tier). With ``gate``,
        -1 (and nothing counted) when that key exists: checked in the same round trip."""
        budget = max(1, per_minute or self.per_minute)
        interval = max(1, 60_000 // budget)
        keys = [key] if gate is None else [key, gate]
        return int(await self._script(keys=keys, args=[interval, budget]))
