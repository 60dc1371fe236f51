"""The webapp's shared resources: pools, Redis, the HTTP client, caches, discovery, the
links that hand committed events to admin servers and the pushback they report."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from cluster import ids, registry
from cluster.settings import Settings
from webapp import retention, scheduler, store
from webapp.adminlink import AdminLinks
from webapp.db import Database
from webapp.outbox import Outbox
from webapp.pushback import Pushback
from webapp.ratelimit import RateLimiter

log = logging.getLogger(__name__)

_AUTH_CACHE_MAX = 50_000
_DISCOVERY_TTL_S = 1.0
REDIS_POOL_SIZE = 64
REDIS_WAIT_S = 5.0
# a revoked token's marker outlives every identity cache entry by this much
_REVOKED_MARGIN_S = 5


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings)
        # a blocking pool: at its limit a request waits for a connection (up to the
        # timeout) instead of failing with MaxConnectionsError, which a reconnect storm of
        # a few hundred concurrent rtm.connect calls otherwise turns into internal_errors
        self.redis: aioredis.Redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=REDIS_POOL_SIZE, timeout=REDIS_WAIT_S))
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
        self.limiter = RateLimiter(self.redis, settings.rate_limit_per_minute)
        self._auth: dict[str, tuple[float, store.Identity]] = {}
        self._discovered: dict[str, tuple[float, dict[str, str]]] = {}
        self.pushback = Pushback()
        self.admins = AdminLinks(settings.internal_secret, f"webapp-{os.getpid()}",
                                 self.admin_links, self.pushback.behind,
                                 settings.notify_attempts)
        self.outbox = Outbox(self.admins.send, settings.notify_deadline_s)
        self.db.committed = self.outbox.committed
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        await self.db.open()
        self._tasks = [asyncio.create_task(retention.run(self.db, self.redis, self.settings)),
                       asyncio.create_task(self.outbox.run()),
                       asyncio.create_task(self.admins.run()),
                       asyncio.create_task(scheduler.run(self))]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.admins.close()
        await self.outbox.close()
        await self.http.aclose()
        await self.redis.aclose()
        await self.db.close()

    def key(self, *parts: str) -> str:
        return self.settings.redis_prefix + ":".join(parts)

    async def identity(self, token: str) -> store.Identity | None:
        """Token -> identity, cached in process so a post costs no directory round trip."""
        now = time.monotonic()
        hit = self._auth.get(token)
        if hit and hit[0] > now:
            return hit[1]
        who = await store.identity_for_token(self.db, token)
        if who is not None:
            if len(self._auth) >= _AUTH_CACHE_MAX:
                self._auth.clear()
            self._auth[token] = (now + self.settings.auth_cache_ttl_s, who)
        return who

    def revoked_key(self, token: str) -> str:
        return self.key("revoked", ids.hash_token(token))

    async def mark_revoked(self, token: str) -> None:
        """Once the directory forgot the token: shut it out of every process's identity
        cache. The marker lives longer than any cache entry made before the token was
        deleted (after that, a cache miss finds no token); the rate-limit script checks it
        on every call, in the round trip it makes anyway (docs/architecture.md)."""
        ttl = math.ceil(self.settings.auth_cache_ttl_s) + _REVOKED_MARGIN_S
        await self.redis.set(self.revoked_key(token), 1, ex=ttl)
        self.forget_token(token)

    def forget_token(self, token: str) -> None:
        self._auth.pop(token, None)

    async def services(self, role: str) -> dict[str, str]:
        now = time.monotonic()
        hit = self._discovered.get(role)
        if hit and hit[0] > now:
            return hit[1]
        raw = await self.redis.hgetall(registry.registry_key(self.settings.redis_prefix, role))
        found = registry.urls(raw)
        self._discovered[role] = (now + _DISCOVERY_TTL_S, found)
        return found

    async def gateways(self) -> dict[str, str]:
        """Gateways to hand out, read fresh: a drained gateway leaves the registry before it
        says goodbye, and its clients come straight back; among live leases, the recently
        renewed ones, so a gateway that just died is skipped before its lease runs out."""
        raw = await self.redis.hgetall(
            registry.registry_key(self.settings.redis_prefix, "gateway_server"))
        return registry.recently_renewed(raw, self.settings.lease_ttl_s)

    def forget(self, role: str) -> None:
        self._discovered.pop(role, None)

    async def admin_links(self) -> dict[str, str]:
        """name -> link address of every live admin server (the ``link`` lease field)."""
        raw = await self.redis.hgetall(
            registry.registry_key(self.settings.redis_prefix, "admin_server"))
        return {name: doc["link"] for name, doc in registry.live(raw).items()
                if isinstance(doc.get("link"), str)}

    def internal_headers(self) -> dict[str, str]:
        return {"x-backchannel-internal": self.settings.internal_secret}

    async def presence(self, user_id: str) -> dict[str, Any] | None:
        for url in (await self.services("presence_server")).values():
            try:
                resp = await self.http.get(url + "/presence", params={"user": user_id},
                                           headers=self.internal_headers())
                if resp.status_code == 200:
                    return resp.json()
            except httpx.HTTPError as exc:
                log.warning("presence lookup failed: %s", type(exc).__name__)
        return None
