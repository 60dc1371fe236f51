"""The admin server process: POST /notify from the webapp, forwarded along the ring."""

from __future__ import annotations

import logging
from typing import Any

import trio
from prometheus_client import Counter, Gauge
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from admin_server.links import ChannelLink, LinkDown
from cluster import service, wire
from cluster.ring import Ring
from cluster.settings import Settings

log = logging.getLogger(__name__)

FORWARDED = Counter("backchannel_admin_server_events_total", "Events forwarded", ["outcome"])
LINKS_UP = Gauge("backchannel_admin_server_links_up", "Channel server links connected")
MAX_EVENTS = 1000
MAX_ATTEMPTS = 2
FORWARD_PARALLEL = 64  # events of one notify awaiting their acks at once


class AdminServer:
    def __init__(self, settings: Settings, name: str, watcher: service.RingWatcher) -> None:
        self.settings = settings
        self.name = name
        self.watcher = watcher
        self.links: dict[str, ChannelLink] = {}
        self.nursery: trio.Nursery | None = None
        watcher.listen(self._on_ring_change)

    def status(self) -> dict[str, Any]:
        LINKS_UP.set(sum(link.up for link in self.links.values()))
        return {"name": self.name, "epoch": self.watcher.ring.epoch,
                "links": {n: link.up for n, link in self.links.items()}}

    async def _on_ring_change(self, before: Ring, after: Ring) -> None:
        members = after.config.urls()
        for name in list(self.links):
            if name not in members or self.links[name].url != members[name]:
                self.links.pop(name).cancel.cancel()
        for name, url in members.items():
            if name not in self.links and self.nursery is not None:
                link = self.links[name] = ChannelLink(name, url, self.name,
                                                          self.settings.internal_secret)
                self.nursery.start_soon(link.run)

    async def forward(self, stream: str, seq: int, event: dict[str, Any]) -> bool:
        """Deliver one event to its owner; on "moved" re-read the ring and try again."""
        for _ in range(MAX_ATTEMPTS):
            ring = self.watcher.ring
            try:
                link = self.links.get(ring.owner(stream))
            except LookupError:
                await self.watcher.refresh()
                continue
            if link is None:
                await self.watcher.refresh()
                continue
            try:
                outcome = await link.send(ring.epoch, stream, seq, event)
            except LinkDown:
                FORWARDED.labels("link_down").inc()
                await self.watcher.refresh()
                continue
            if outcome == "ack":
                FORWARDED.labels("ack").inc()
                return True
            FORWARDED.labels("moved").inc()
            await self.watcher.refresh()
        return False

    async def notify(self, request: Request) -> Response:
        if not wire.secret_matches(request.headers.get("x-backchannel-internal"),
                                      self.settings.internal_secret):
            return JSONResponse({"ok": False, "error": "not_allowed"}, status_code=403)
        try:
            body = await request.body()
            if len(body) > self.settings.max_body_bytes * 4:
                raise wire.BadFrame("too large")
            events = _parse_events(wire.loads(body, typed=False))
        except wire.BadFrame:
            return JSONResponse({"ok": False, "error": "invalid_arguments"}, status_code=400)
        if not self.watcher.ring.config.members:
            await self.watcher.refresh()
        ok = await self._forward_all(events)
        if not ok:
            return JSONResponse({"ok": False, "error": "unavailable"}, status_code=503)
        return JSONResponse({"ok": True, "events": len(events)})


    async def _forward_all(self, events: list[tuple[str, int, dict[str, Any]]]) -> bool:
        """Forward a batch with up to FORWARD_PARALLEL events awaiting their acks at once:
        one at a time, a 5,000-user seed's 10,000 events took 23 s of round trips. Order
        across the batch is not needed: channel servers order each stream by seq."""
        failed = 0
        limit = trio.CapacityLimiter(FORWARD_PARALLEL)

        async def one(stream: str, seq: int, event: dict[str, Any]) -> None:
            nonlocal failed
            async with limit:
                if not await self.forward(stream, seq, event):
                    failed += 1

        async with trio.open_nursery() as nursery:
            for stream, seq, event in events:
                nursery.start_soon(one, stream, seq, event)
        return failed == 0


def _parse_events(frame: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    items = wire.field(frame, "events", list)
    if not items or len(items) > MAX_EVENTS:
        raise wire.BadFrame("events")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise wire.BadFrame("event")
        seq = wire.field(item, "seq", int)
        if seq < 0:
            raise wire.BadFrame("seq")  # 0: ephemeral (never stored), else a log position
        out.append((wire.field(item, "stream", str), seq, wire.field(item, "event", dict)))
    return out


async def main(settings: Settings, name: str, port: int, addr_file: Any = None, *,
               task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
    watcher = service.RingWatcher(settings)
    admin = AdminServer(settings, name, watcher)
    async with trio.open_nursery() as nursery:
        admin.nursery = nursery
        await nursery.start(watcher.run)
        app = service.http_app("admin_server", admin.status,
                               [Route("/notify", admin.notify, methods=["POST"])])
        url = await nursery.start(service.serve_http, app, settings.bind_host, port)
        await service.announce(settings, "admin_server", name, url, url, addr_file,
                               task_status)
