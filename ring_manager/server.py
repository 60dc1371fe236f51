"""The ring manager process: a leader lease in Redis, and while leading, a reconcile loop
that heals the ring (see :mod:`ring_manager.plan`). Ring writes are compare-and-set
(WATCH/MULTI), so the CLI and the manager never lose each other's changes."""

from __future__ import annotations

import logging
from typing import Any

import redis
import trio
from prometheus_client import Counter, Gauge

from cluster import registry, service
from cluster.ring import RingConfig
from cluster.settings import Settings
from ring_manager.plan import Liveness, heal, rebuild

log = logging.getLogger(__name__)

CHANGES = Counter("backchannel_ring_manager_changes_total", "Ring changes made", ["kind"])
LEADING = Gauge("backchannel_ring_manager_leading", "1 while this manager leads")

# renew our own leadership only: a manager that lost the lease must not extend another's
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class RingManager:
    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.redis = service.redis_client(settings)
        self.leading = False
        self.known: RingConfig | None = None  # the newest ring we have seen
        ttl_ms = int(settings.lease_ttl_s * 1000)
        self.live = Liveness(grace_ms=ttl_ms, started_ms=registry.now_ms())
        self.prefix = settings.redis_prefix

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "leading": self.leading,
                "epoch": self.known.epoch if self.known else 0}

    async def run(self) -> None:
        while True:
            try:
                await trio.to_thread.run_sync(self.tick)
            except redis.RedisError as exc:
                log.warning("ring manager tick failed: %s", type(exc).__name__)
            LEADING.set(int(self.leading))
            await trio.sleep(self.settings.ring_manager_interval_s)

    def tick(self) -> None:
        """One round, in a worker thread (the sync Redis client blocks)."""
        ttl_ms = max(int(self.settings.lease_ttl_s * 1000), 1000)
        leading = bool(self.redis.eval(_RENEW, 1, registry.leader_key(self.prefix),
                                       self.name, ttl_ms))
        if leading != self.leading:
            log.info("ring manager %s %s", self.name, "leads" if leading else "follows")
            self.leading = leading
        leases = registry.live(self.redis.hgetall(
            registry.registry_key(self.prefix, "channel_server")))
        self.live.observe(leases)
        if leading:
            self._reconcile(leases)
        else:
            self._remember(RingConfig.from_json(self.redis.get(registry.ring_key(self.prefix))))

    def _remember(self, config: RingConfig) -> None:
        if config.members and (self.known is None or config.epoch >= self.known.epoch):
            self.known = config

    def _reconcile(self, leases: dict[str, dict[str, Any]]) -> None:
        key = registry.ring_key(self.prefix)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current = RingConfig.from_json(pipe.get(key))
                    change = self._plan(current, leases)
                    if change is None:
                        pipe.unwatch()
                        return
                    config, actions = change
                    pipe.multi()
                    pipe.set(key, config.to_json())
                    pipe.execute()
                except redis.WatchError:
                    continue
                self._remember(config)
                for action in actions:
                    log.warning("ring epoch=%d: %s", config.epoch, action)
                    CHANGES.labels(action.split()[0]).inc()
                return

    def _plan(self, current: RingConfig, leases: dict[str, dict[str, Any]]
              ) -> tuple[RingConfig, list[str]] | None:
        if not current.members:
            return self._republish(current, leases)
        self._remember(current)
        return heal(current, leases, self.live, registry.now_ms())

    def _republish(self, current: RingConfig, leases: dict[str, dict[str, Any]]
                   ) -> tuple[RingConfig, list[str]] | None:
        """Redis lost the ring (or it was never written): put back the newest we know, or
        rebuild it from what the channel servers say they serve."""
        floor = max(current.epoch, self.known.epoch if self.known else 0)
        if self.known is not None:
            return RingConfig(floor + 1, self.known.members), ["republish from memory"]
        rebuilt = rebuild(leases, floor)
        return (rebuilt, ["republish from leases"]) if rebuilt else None


async def main(settings: Settings, name: str, port: int, addr_file: Any = None, *,
               task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
    manager = RingManager(settings, name)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(manager.run)
        app = service.http_app("ring_manager", manager.status)
        url = await nursery.start(service.serve_http, app, settings.bind_host, port)
        await service.announce(settings, "ring_manager", name, url, url, addr_file,
                               task_status)
