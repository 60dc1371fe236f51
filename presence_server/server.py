"""The presence server process: POST /sync from gateways, GET /presence for the webapp."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import trio
from prometheus_client import Gauge
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cluster import service, wire
from cluster.settings import Settings
from presence_server.state import PresenceState

log = logging.getLogger(__name__)
ONLINE = Gauge("backchannel_presence_server_online_users", "Users with a live connection")
GATEWAYS = Gauge("backchannel_presence_server_gateways", "Gateways reporting")
MAX_USERS_PER_REPORT = 1_000_000


class PresenceServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = PresenceState(settings.presence_ttl_s)

    def status(self) -> dict[str, Any]:
        return {"gateways": len(self.state.gateways)}

    def _allowed(self, request: Request) -> bool:
        return wire.secret_matches(request.headers.get("x-backchannel-internal"),
                                      self.settings.internal_secret)

    async def sync(self, request: Request) -> Response:
        if not self._allowed(request):
            return JSONResponse({"ok": False, "error": "not_allowed"}, status_code=403)
        try:
            body = json.loads(await request.body())
            gateway, users = body["gateway"], body["users"]
            if not isinstance(gateway, str) or not isinstance(users, dict) or len(
                users
            ) > MAX_USERS_PER_REPORT or not all(
                isinstance(u, str) and type(c) is int and c >= 0 for u, c in users.items()
            ):
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
            return JSONResponse({"ok": False, "error": "invalid_arguments"}, status_code=400)
        self.state.sync(gateway, users, time.monotonic(), time.time())
        self._gauges()
        return JSONResponse({"ok": True})

    async def presence(self, request: Request) -> Response:
        if not self._allowed(request):
            return JSONResponse({"ok": False, "error": "not_allowed"}, status_code=403)
        user = request.query_params.get("user", "")
        if not user or len(user) > 32:
            return JSONResponse({"ok": False, "error": "user_not_found"}, status_code=400)
        return JSONResponse({"ok": True, **self.state.lookup(user, time.monotonic())})

    def _gauges(self) -> None:
        now = time.monotonic()
        online = {u for r in self.state.gateways.values() if now - r.seen <= self.state.ttl_s
                  for u, c in r.users.items() if c > 0}
        ONLINE.set(len(online))
        GATEWAYS.set(len(self.state.gateways))

    async def expire_loop(self) -> None:
        while True:
            await trio.sleep(self.settings.presence_ttl_s / 3)
            gone = self.state.expire(time.monotonic())
            if gone:
                log.warning("gateways stopped reporting: %d", len(gone))
                self._gauges()


async def main(settings: Settings, name: str, port: int, addr_file: Any = None, *,
               task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
    server = PresenceServer(settings)
    app = service.http_app("presence_server", server.status, [
        Route("/sync", server.sync, methods=["POST"]),
        Route("/presence", server.presence, methods=["GET"]),
    ])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.expire_loop)
        url = await nursery.start(service.serve_http, app, settings.bind_host, port)
        await service.announce(settings, "presence_server", name, url, url, addr_file,
                               task_status)
