"""The admin server process: notifies from webapps (over a persistent WebSocket link, or
POST /notify), forwarded along the ring to the channel servers that own their streams."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Any

import orjson
import trio
from prometheus_client import Counter, Gauge
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from admin_server.links import ChannelLink, LinkDown, encode_item
from cluster import service, wire
from cluster.ring import Ring
from cluster.settings import Settings

log = logging.getLogger(__name__)

FORWARDED = Counter("backchannel_admin_server_events_total", "Events forwarded", ["outcome"])
ACKED, MOVED, LINK_DOWN = (FORWARDED.labels(o) for o in ("ack", "moved", "link_down"))
LINKS_UP = Gauge("backchannel_admin_server_links_up", "Channel server links connected")
LINK_FRAMES = Counter("backchannel_admin_server_webapp_frames_total",
                      "Frames on webapp links", ["direction"])
LINK_NOTIFIES = Counter("backchannel_admin_server_webapp_notifies_total",
                        "Notifies received on webapp links", ["outcome"])
FRAMES_IN, FRAMES_OUT = (LINK_FRAMES.labels(d) for d in ("in", "out"))
NOTIFY_OK, NOTIFY_INVALID, NOTIFY_UNAVAILABLE = (
    LINK_NOTIFIES.labels(o) for o in ("ok", "invalid", "unavailable"))
WEBAPP_LINKS = Gauge("backchannel_admin_server_webapp_links", "Connected webapp links")
MAX_EVENTS = 1000
MAX_ATTEMPTS = 2
# a webapp link's frame: its items are at most 1 MiB each (webapp/adminlink.py), and a
# frame carries a few of them
MAX_LINK_FRAME = 16 * 1024 * 1024
MAX_NOTIFIES_PER_FRAME = 1000
# notifies of one webapp link being forwarded at once; beyond that the link's reader waits,
# and TCP pushes back on the webapp
LINK_IN_FLIGHT = 512

Events = list[tuple[str, int, dict[str, Any]]]


class AdminServer:
    def __init__(self, settings: Settings, name: str, watcher: service.RingWatcher) -> None:
        self.settings = settings
        self.name = name
        self.watcher = watcher
        self.links: dict[str, ChannelLink] = {}
        self.nursery: trio.Nursery | None = None
        self.webapp_links = 0
        watcher.listen(self._on_ring_change)

    def status(self) -> dict[str, Any]:
        LINKS_UP.set(sum(link.up for link in self.links.values()))
        return {"name": self.name, "epoch": self.watcher.ring.epoch,
                "links": {n: link.up for n, link in self.links.items()},
                "webapp_links": self.webapp_links}

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

    # --- forwarding ----------------------------------------------------------------------

    async def deliver(self, events: Events) -> tuple[bool, set[str]]:
        """Hand every event to its stream's owner, one publish per owner; events of streams
        that moved, or whose owner's link is down, go again after a ring refresh. Returns
        whether all were taken, and the streams whose fanout is behind (pushback)."""
        if not self.watcher.ring.config.members:
            await self.watcher.refresh()
        pending = [(stream, encode_item(stream, seq, event)) for stream, seq, event in events]
        behind: set[str] = set()
        for attempt in range(MAX_ATTEMPTS):
            ring = self.watcher.ring
            groups, unrouted = self._route(ring, pending)
            retry = list(unrouted)
            if len(groups) == 1:  # one owner: no task of its own
                await self._publish(*groups[0], ring.epoch, retry, behind)
            else:
                async with trio.open_nursery() as nursery:
                    for link, items in groups:
                        nursery.start_soon(self._publish, link, items, ring.epoch, retry,
                                           behind)
            if not retry:
                return True, behind
            if attempt + 1 < MAX_ATTEMPTS:
                await self.watcher.refresh()
            pending = retry
        return False, behind

    def _route(self, ring: Ring, pending: list[tuple[str, bytes]]
               ) -> tuple[list[tuple[ChannelLink, list[tuple[str, bytes]]]],
                          list[tuple[str, bytes]]]:
        """Group items by their owner's link; items with no owner (or no link yet) apart."""
        by_owner: dict[str, list[tuple[str, bytes]]] = {}
        unrouted = []
        for stream, item in pending:
            try:
                by_owner.setdefault(ring.owner(stream), []).append((stream, item))
            except LookupError:
                unrouted.append((stream, item))
        groups = []
        for owner, items in by_owner.items():
            link = self.links.get(owner)
            if link is None:
                unrouted += items
            else:
                groups.append((link, items))
        return groups, unrouted

    async def _publish(self, link: ChannelLink, items: list[tuple[str, bytes]], epoch: int,
                       retry: list[tuple[str, bytes]], behind: set[str]) -> None:
        try:
            moved, slow = await link.publish(epoch, [item for _, item in items])
        except LinkDown:
            LINK_DOWN.inc(len(items))
            retry += items
            return
        again = [(stream, item) for stream, item in items if stream in moved]
        ACKED.inc(len(items) - len(again))
        MOVED.inc(len(again))
        retry += again
        behind.update(slow)

    # --- POST /notify --------------------------------------------------------------------

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
        ok, behind = await self.deliver(events)
        if not ok:
            return JSONResponse({"ok": False, "error": "unavailable"}, status_code=503)
        return JSONResponse({"ok": True, "events": len(events), "behind": sorted(behind)})

    # --- webapp links --------------------------------------------------------------------

    async def handle_webapp(self, request: WebSocketRequest) -> None:
        """One webapp's link: the hello (with the cluster secret) before anything else,
        then notify frames, answered in batches. Contained: a bad peer never stops us."""
        try:
            ws = await request.accept()
            hello = wire.loads(await ws.get_message())
            if hello.get("type") != "hello" or not wire.secret_matches(
                    hello.get("secret"), self.settings.internal_secret):
                await ws.aclose(code=1008, reason="not allowed")
                return
            self.webapp_links += 1
            WEBAPP_LINKS.set(self.webapp_links)
            try:
                await WebappLink(self, ws).serve()
            finally:
                self.webapp_links -= 1
                WEBAPP_LINKS.set(self.webapp_links)
        except* ConnectionClosed:
            pass
        except* wire.BadFrame as group:
            log.warning("closing webapp link after bad frame: %s", group.exceptions[0])
        except* Exception:
            log.exception("webapp link handler failed")


class WebappLink:
    """Serves one webapp link: each notify of a frame is forwarded on its own, and the
    answers that are ready when the writer is free go back together in one frame."""

    def __init__(self, admin: AdminServer, ws: WebSocketConnection) -> None:
        self.admin = admin
        self.ws = ws
        self.answers: list[bytes] = []
        self.ready = trio.Event()
        self.limit = trio.CapacityLimiter(LINK_IN_FLIGHT)

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            while True:
                raw = await self.ws.get_message()
                FRAMES_IN.inc()
                for notify_id, events in _parse_notifies(wire.loads(raw)):
                    token = object()  # ids come from the peer: not trusted to be unique
                    await self.limit.acquire_on_behalf_of(token)
                    nursery.start_soon(self._one, notify_id, events, token)

    async def _one(self, notify_id: int, events: Events | None, token: object) -> None:
        try:
            if events is None:
                NOTIFY_INVALID.inc()
                self._answer({"id": notify_id, "ok": False, "error": "invalid_arguments"})
                return
            ok, behind = await self.admin.deliver(events)
            (NOTIFY_OK if ok else NOTIFY_UNAVAILABLE).inc()
            self._answer({"id": notify_id, "ok": True, "behind": sorted(behind)} if ok
                         else {"id": notify_id, "ok": False, "error": "unavailable"})
        finally:
            self.limit.release_on_behalf_of(token)

    def _answer(self, answer: dict[str, Any]) -> None:
        self.answers.append(orjson.dumps(answer))
        self.ready.set()

    async def _writer(self) -> None:
        while True:
            await self.ready.wait()
            self.ready = trio.Event()
            answers, self.answers = self.answers, []
            await self.ws.send_message(b'{"type":"notified","items":[%b]}' % b",".join(answers))
            FRAMES_OUT.inc()


def _parse_notifies(frame: dict[str, Any]) -> Iterable[tuple[int, Events | None]]:
    """(id, events) of each notify of a frame; events None: that notify is invalid and is
    answered so. A frame that is not a notify, or an item without an id, closes the link:
    there would be nobody to answer."""
    if frame.get("type") != "notify":
        raise wire.BadFrame("not a notify")
    items = wire.field(frame, "items", list)
    if not 0 < len(items) <= MAX_NOTIFIES_PER_FRAME:
        raise wire.BadFrame("items")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise wire.BadFrame("notify")
        notify_id = wire.field(item, "id", int)
        if not 0 <= notify_id < 2**63:
            raise wire.BadFrame("id")
        try:
            out.append((notify_id, _parse_events(item)))
        except wire.BadFrame:
            out.append((notify_id, None))
    return out


def _parse_events(frame: dict[str, Any]) -> Events:
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
    from trio_websocket import serve_websocket

    watcher = service.RingWatcher(settings)
    admin = AdminServer(settings, name, watcher)
    async with trio.open_nursery() as nursery:
        admin.nursery = nursery
        await nursery.start(watcher.run)
        app = service.http_app("admin_server", admin.status,
                               [Route("/notify", admin.notify, methods=["POST"])])
        url = await nursery.start(service.serve_http, app, settings.bind_host, port)
        ws_server = await nursery.start(partial(
            serve_websocket, admin.handle_webapp, settings.bind_host, 0, None,
            max_message_size=MAX_LINK_FRAME, receive_buffer_size=65536))
        link_url = f"ws://{settings.bind_host}:{ws_server.port}"
        # the link rides the lease as an extra field: readers of "url" are unaffected
        await service.announce(settings, "admin_server", name, url, url, addr_file,
                               task_status, lambda: {"link": link_url})
