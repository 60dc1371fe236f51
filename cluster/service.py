"""What the trio services share: logging, the ring watcher, registration in Redis and the
small HTTP surface (health + Prometheus metrics). Written against anyio so that nothing in
`cluster/` binds to one event loop; Redis is reached with the sync client in a worker thread,
off the hot path, as DESIGN.md asks."""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import redis
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cluster import registry
from cluster.ring import Ring, RingConfig
from cluster.settings import Settings

log = logging.getLogger(__name__)


def setup_logging(level: str, name: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, socket_timeout=5)


async def register(settings: Settings, role: str, name: str, url: str,
                   client: redis.Redis | None = None, **extra: Any) -> None:
    """Write (or renew) this process's lease in the registry."""
    own = client is None
    client = client or redis_client(settings)
    key = registry.registry_key(settings.redis_prefix, role)
    try:
        await anyio.to_thread.run_sync(client.hset, key, name,
                                       registry.entry(url, settings.lease_ttl_s, **extra))
    finally:
        if own:
            client.close()


async def hold_lease(settings: Settings, role: str, name: str, url: str,
                     extra: Callable[[], dict[str, Any]] | None = None) -> None:
    """Renew the lease every quarter TTL, forever. Rewriting the whole entry each time is
    what makes a registry wiped by a Redis restart whole again within one heartbeat."""
    client = redis_client(settings)
    try:
        while True:
            await anyio.sleep(settings.lease_ttl_s / 4)
            try:
                await register(settings, role, name, url, client, **(extra() if extra else {}))
            except redis.RedisError as exc:
                log.warning("lease renewal failed: %s", type(exc).__name__)
    finally:
        client.close()


async def unregister(settings: Settings, role: str, name: str) -> None:
    client = redis_client(settings)
    key = registry.registry_key(settings.redis_prefix, role)
    try:
        await anyio.to_thread.run_sync(client.hdel, key, name)
    except redis.RedisError as exc:
        log.warning("unregister failed: %s", type(exc).__name__)
    finally:
        client.close()


class Discovery:
    """Registry lookups with a short cache and one Redis connection pool, so that a client
    connect or a presence report costs no Redis round trip in the common case."""

    TTL_S = 1.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = redis_client(settings)
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}

    async def lookup(self, role: str) -> dict[str, str]:
        now = anyio.current_time()
        hit = self._cache.get(role)
        if hit and hit[0] > now:
            return hit[1]
        key = registry.registry_key(self.settings.redis_prefix, role)
        try:
            raw = await anyio.to_thread.run_sync(self._client.hgetall, key)
        except redis.RedisError as exc:
            log.warning("registry read failed: %s", type(exc).__name__)
            return hit[1] if hit else {}
        found = registry.urls(raw)  # live leases only
        self._cache[role] = (now + self.TTL_S, found)
        return found

    def forget(self, role: str) -> None:
        self._cache.pop(role, None)


def settle_heap() -> None:
    """In a service process, once its code is loaded: move what start-up allocated (modules,
    app: ~50k objects) out of the collector's reach. A full collection traverses every
    tracked object, so without this each one pays 20-35 ms for objects that live as long as
    the process (docs/performance.md, "Garbage collection"). Not for a test process: frozen
    cyclic garbage is never freed."""
    gc.collect()
    gc.freeze()


async def announce(settings: Settings, role: str, name: str, url: str, http_url: str,
                   addr_file: Any, task_status: TaskStatus[dict[str, str]],
                   extra: Callable[[], dict[str, Any]] | None = None) -> None:
    """Once listening: take a lease in the registry, write the address file, report
    started; then renew the lease until cancelled and unregister first thing on the way
    out, so no new work is sent here while connections drain."""
    from ops.addrfile import write_addr

    await register(settings, role, name, url, **(extra() if extra else {}))
    info = {"name": name, "role": role, "url": url, "http_url": http_url}
    if addr_file:
        write_addr(addr_file, info)
    log.info("%s %s listening at %s", role, name, url)
    task_status.started(info)
    try:
        await hold_lease(settings, role, name, url, extra)
    finally:
        with anyio.move_on_after(settings.shutdown_grace_s, shield=True):
            await unregister(settings, role, name)


RingListener = Callable[[Ring, Ring], Awaitable[None]]


class RingWatcher:
    """Keeps the current ring; polls Redis and calls listeners when the epoch changes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ring = Ring(RingConfig(0, {}))
        self._listeners: list[RingListener] = []
        self._client = redis_client(settings)
        self._key = registry.ring_key(settings.redis_prefix)

    def listen(self, fn: RingListener) -> None:
        self._listeners.append(fn)

    async def refresh(self) -> Ring:
        try:
            raw = await anyio.to_thread.run_sync(self._client.get, self._key)
        except redis.RedisError as exc:
            log.warning("ring read failed: %s", type(exc).__name__)
            return self.ring
        config = RingConfig.from_json(raw)
        if config.epoch > self.ring.epoch:
            before, self.ring = self.ring, Ring(config)
            log.info("ring epoch=%d members=%d", config.epoch, len(config.members))
            for fn in self._listeners:
                await fn(before, self.ring)
        return self.ring

    async def run(self, *, task_status: TaskStatus[Ring] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.refresh()
        task_status.started(self.ring)
        while True:
            await anyio.sleep(self.settings.ring_poll_interval_s)
            await self.refresh()


def http_app(role: str, status: Callable[[], dict[str, Any]],
             extra: list[BaseRoute] | None = None) -> Starlette:
    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "role": role, **status()})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [Route("/health", health), Route("/metrics", metrics)]
    return Starlette(routes=routes + (extra or []))


async def serve_http(app: Starlette, host: str, port: int, *,
                     task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve with hypercorn's trio worker; reports the bound http:// URL."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 2.0

    # hypercorn's trio worker; under the trio backend anyio's task status is accepted as is
    async with anyio.create_task_group() as tg:
        binds = await tg.start(serve, app, config)
        task_status.started(binds[0])
