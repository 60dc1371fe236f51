"""The webapp process: uvicorn on a socket we bind first, so port 0 works and the address
is known (and registered in Redis) before the first request; with header, body and keep-alive
timeouts (webapp/http_timeouts.py)."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from pathlib import Path

import uvicorn
import uvloop

from cluster import registry
from cluster.service import settle_heap
from cluster.settings import Settings
from ops.addrfile import write_addr
from webapp.app import build_app
from webapp.http_timeouts import BodyDeadline, header_deadline_protocol
from webapp.runtime import Runtime

log = logging.getLogger(__name__)


def serve(settings: Settings, name: str, port: int, addr_file: Path | None) -> None:
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP, and without it Nagle + delayed ACK add 40 ms to every response
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.bind_host, port))
    sock.listen(1024)
    host, bound = sock.getsockname()[:2]
    url = f"http://{host}:{bound}"

    key = registry.registry_key(settings.redis_prefix, "webapp")
    lease: list[asyncio.Task] = []

    async def renew() -> None:
        # the lease is rewritten whole each time, so a Redis that lost its data has this
        # webapp back in discovery within one heartbeat
        while True:
            await asyncio.sleep(settings.lease_ttl_s / 4)
            try:
                await rt_ref[0].redis.hset(key, name, registry.entry(url, settings.lease_ttl_s))
            except Exception as exc:  # noqa: BLE001 - a Redis hiccup must not end the lease loop
                log.warning("lease renewal failed: %s", type(exc).__name__)

    rt_ref: list[Runtime] = []

    async def on_ready(rt: Runtime) -> None:
        rt_ref.append(rt)
        await rt.redis.hset(key, name, registry.entry(url, settings.lease_ttl_s))
        lease.append(asyncio.create_task(renew()))
        settle_heap()
        if addr_file:
            write_addr(addr_file, {"name": name, "role": "webapp", "url": url, "http_url": url,
                                   "webapp_url": url + "/api/"})
        log.info("webapp %s listening port=%d", name, bound)

    async def on_stop(rt: Runtime) -> None:
        for task in lease:
            task.cancel()
        await rt.redis.hdel(key, name)

    app = BodyDeadline(build_app(settings, on_ready=on_ready, on_stop=on_stop),
                       settings.http_body_timeout_s)
    # h11 named explicitly: the header deadline extends uvicorn's h11 protocol ("auto" would
    # pick httptools if it were ever installed)
    config = uvicorn.Config(app, log_level=settings.log_level.lower(), access_log=False,
                            timeout_graceful_shutdown=int(settings.shutdown_grace_s),
                            http=header_deadline_protocol(settings.http_header_timeout_s),
                            # uvicorn takes whole seconds; rounding up keeps it above httpx's
                            timeout_keep_alive=math.ceil(settings.http_keepalive_timeout_s),
                            lifespan="on")
    server = uvicorn.Server(config)
    # uvloop: the post path's event-loop and socket-write overhead (asyncio's selector loop
    # was ~1/4 of the webapp's samples) falls ~15% (docs/performance.md, "The post path")
    uvloop.run(server.serve(sockets=[sock]))
