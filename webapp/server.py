"""The webapp process: uvicorn on a socket we bind first, so port 0 works and the address
is known (and registered in Redis) before the first request."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import uvicorn

from cluster import registry
from cluster.settings import Settings
from ops.addrfile import write_addr
from webapp.app import build_app
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

    async def on_ready(rt: Runtime) -> None:
        await rt.redis.hset(registry.registry_key(settings.redis_prefix, "webapp"), name,
                            registry.entry(url))
        if addr_file:
            write_addr(addr_file, {"name": name, "role": "webapp", "url": url, "http_url": url,
                                   "webapp_url": url + "/api/"})
        log.info("webapp %s listening port=%d", name, bound)

    async def on_stop(rt: Runtime) -> None:
        await rt.redis.hdel(registry.registry_key(settings.redis_prefix, "webapp"), name)

    app = build_app(settings, on_ready=on_ready, on_stop=on_stop)
    config = uvicorn.Config(app, log_level=settings.log_level.lower(), access_log=False,
                            timeout_graceful_shutdown=int(settings.shutdown_grace_s),
                            lifespan="on")
    server = uvicorn.Server(config)
    asyncio.run(server.serve(sockets=[sock]))
