"""The channel server process: WebSocket links from admin servers (events in) and gateways
(subscriptions in, event batches out), plus a small HTTP surface for health and metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Any

import httpx
import trio
from prometheus_client import Counter, Gauge
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from channel_server.streams import StreamState
from cluster import service, wire
from cluster.ring import Ring
from cluster.settings import Settings

log = logging.getLogger(__name__)

EVENTS_IN = Counter("backchannel_channel_server_events_total", "Events accepted from admins")
FRAMES_OUT = Counter("backchannel_channel_server_frames_total", "Frames sent to gateways")
GAPS = Counter("backchannel_channel_server_gap_repairs_total", "Gap repairs", ["outcome"])
LINKS = Gauge("backchannel_channel_server_gateway_links", "Connected gateway links")
QUEUED = Gauge("backchannel_channel_server_queue_length", "Items queued to gateways")
SUBS = Gauge("backchannel_channel_server_subscriptions", "Stream subscriptions held")
MAX_BATCH = 256


class Control(str):
    """A whole frame queued to a gateway (e.g. "moved"), sent as is, never batched."""


class GatewayLink:
    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.send, self.receive = trio.open_memory_channel[str](size)
        self.streams: set[str] = set()
        self.closed = trio.Event()


class ChannelServer:
    def __init__(self, settings: Settings, name: str, watcher: service.RingWatcher) -> None:
        self.settings = settings
        self.name = name
        self.watcher = watcher
        self.links: set[GatewayLink] = set()
        self.subs: dict[str, set[GatewayLink]] = {}
        self.streams: dict[str, StreamState] = {}
        self.repairing: set[str] = set()
        self.http: httpx.AsyncClient | None = None
        self.discovery = service.Discovery(settings)
        self.nursery: trio.Nursery | None = None
        watcher.listen(self._on_ring_change)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "epoch": self.watcher.ring.epoch, "gateways": len(self.links),
                "streams": len(self.streams), "subscriptions": sum(map(len, self.subs.values()))}

    def owns(self, stream: str, ring: Ring | None = None) -> bool:
        ring = ring or self.watcher.ring
        try:
            return ring.owner(stream) == self.name
        except LookupError:
            return False

    # --- connections ---------------------------------------------------------------------

    async def handle(self, request: WebSocketRequest) -> None:
        """Per-connection handler: contained, so one bad peer never stops the server."""
        try:
            ws = await request.accept()
            hello = wire.loads(await ws.get_message())
            if not wire.secret_matches(hello.get("secret"), self.settings.internal_secret):
                await ws.aclose(code=1008, reason="not allowed")
                return
            role = wire.field(hello, "role", str)
            if role == "admin":
                await self._admin_loop(ws)
            elif role == "gateway":
                await self._gateway_loop(ws, wire.field(hello, "name", str)[:64])
            else:
                await ws.aclose(code=1008, reason="unknown role")
        except* ConnectionClosed:
            pass
        except* wire.BadFrame as group:
            log.warning("closing link after bad frame: %s", group.exceptions[0])
        except* Exception:
            log.exception("link handler failed")

    async def _admin_loop(self, ws: WebSocketConnection) -> None:
        while True:
            frame = wire.loads(await ws.get_message())
            if frame["type"] != "event":
                continue
            frame_id = wire.field(frame, "id", int)
            stream = wire.field(frame, "stream", str)
            seq = wire.field(frame, "seq", int)
            event = wire.field(frame, "event", dict)
            if wire.field(frame, "epoch", int) > self.watcher.ring.epoch:
                await self.watcher.refresh()
            if not self.owns(stream):
                await ws.send_message(wire.dumps(
                    {"type": "moved", "id": frame_id, "epoch": self.watcher.ring.epoch}))
                continue
            self.accept(stream, seq, event)
            await ws.send_message(wire.dumps({"type": "ack", "id": frame_id}))

    async def _gateway_loop(self, ws: WebSocketConnection, name: str) -> None:
        link = GatewayLink(name, self.settings.link_queue_size)
        self.links.add(link)
        LINKS.set(len(self.links))
        log.info("gateway %s linked", name)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._gateway_sender, ws, link)
                nursery.start_soon(self._gateway_closer, ws, link)
                while True:
                    frame = wire.loads(await ws.get_message())
                    await self._gateway_frame(ws, link, frame)
        finally:
            self._drop_link(link)

    async def _gateway_frame(self, ws: WebSocketConnection, link: GatewayLink,
                             frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "ephemeral":
            self._ephemeral(frame)
            return
        if kind not in ("subscribe", "unsubscribe"):
            return
        streams = wire.str_list(frame, "streams")
        if wire.field(frame, "epoch", int) > self.watcher.ring.epoch:
            await self.watcher.refresh()
        if kind == "unsubscribe":
            for stream in streams:
                self._unsubscribe(link, stream)
            return
        moved = [s for s in streams if not self.owns(s)]
        for stream in streams:
            if stream not in moved:
                self.subs.setdefault(stream, set()).add(link)
                link.streams.add(stream)
        SUBS.set(sum(map(len, self.subs.values())))
        # the ack lets the gateway hold `hello` until its client can miss nothing
        await ws.send_message(wire.dumps({"type": "subscribed", "id": frame.get("id"),
                                          "epoch": self.watcher.ring.epoch, "moved": moved}))

    def _ephemeral(self, frame: dict[str, Any]) -> None:
        """Events never stored or ordered (user_typing): straight to the subscribers."""
        stream = wire.field(frame, "stream", str)
        event = wire.field(frame, "event", dict)
        if self.owns(stream):
            self._fanout(stream, [(0, wire.encode_item(stream, 0, event))])

    def _unsubscribe(self, link: GatewayLink, stream: str) -> None:
        link.streams.discard(stream)
        subscribers = self.subs.get(stream)
        if subscribers is not None:
            subscribers.discard(link)
            if not subscribers:
                del self.subs[stream]

    def _drop_link(self, link: GatewayLink) -> None:
        for stream in list(link.streams):
            self._unsubscribe(link, stream)
        self.links.discard(link)
        link.closed.set()
        LINKS.set(len(self.links))
        SUBS.set(sum(map(len, self.subs.values())))
        log.info("gateway %s unlinked", link.name)

    async def _gateway_sender(self, ws: WebSocketConnection, link: GatewayLink) -> None:
        """Drain the link's queue, batching whatever has piled up into one frame."""
        async for first in link.receive:
            items = [first]
            while len(items) < MAX_BATCH and not isinstance(items[-1], Control):
                try:
                    items.append(link.receive.receive_nowait())
                except trio.WouldBlock:
                    break
            control = items.pop() if isinstance(items[-1], Control) else None
            if items:
                await ws.send_message(wire.events_frame(items))
                FRAMES_OUT.inc()
            if control is not None:
                await ws.send_message(control)

    async def _gateway_closer(self, ws: WebSocketConnection, link: GatewayLink) -> None:
        await link.closed.wait()
        await ws.aclose(code=1011, reason="gateway too slow")

    # --- fanout --------------------------------------------------------------------------

    def accept(self, stream: str, seq: int, event: dict[str, Any]) -> None:
        EVENTS_IN.inc()
        state = self.streams.get(stream)
        if state is None:
            state = self.streams[stream] = StreamState()
        self._fanout(stream, state.offer(seq, wire.encode_item(stream, seq, event)))
        if state.gap and stream not in self.repairing and self.nursery is not None:
            self.repairing.add(stream)
            self.nursery.start_soon(self._repair, stream)

    def _fanout(self, stream: str, ready: Iterable[tuple[int, str]]) -> None:
        for _, item in ready:
            for link in list(self.subs.get(stream, ())):
                try:
                    link.send.send_nowait(item)
                except trio.WouldBlock:
                    # never stall the fanout for one gateway: drop the link, it resubscribes
                    log.warning("gateway %s queue full, closing link", link.name)
                    self._drop_link(link)
        QUEUED.set(sum(link.receive.statistics().current_buffer_used for link in self.links))

    async def _repair(self, stream: str) -> None:
        """Wait briefly for late events; then fetch the missing seqs from the event log."""
        try:
            await trio.sleep(self.settings.gap_wait_s)
            state = self.streams.get(stream)
            for _ in range(3):
                if state is None or state.gap is None:
                    return
                first, upto = state.gap
                fetched = await self._fetch(stream, first - 1, upto - first)
                if fetched is None:
                    await trio.sleep(self.settings.gap_wait_s)
                    continue
                for ev in fetched:
                    if ev["seq"] < upto:
                        self._fanout(stream, state.offer(
                            ev["seq"], wire.encode_item(stream, ev["seq"], ev["event"])))
                GAPS.labels("repaired").inc()
            if state is not None and state.gap is not None:
                GAPS.labels("skipped").inc()
                log.error("gap on stream not repairable, skipping seqs=%d", state.gap[1]
                          - state.gap[0])
                self._fanout(stream, state.skip_gap())
        finally:
            self.repairing.discard(stream)

    async def _fetch(self, stream: str, after: int, count: int) -> list[dict] | None:
        for url in (await self.discovery.lookup("webapp")).values():
            try:
                resp = await self.http.get(  # type: ignore[union-attr]
                    url + "/internal/events",
                    params={"stream": stream, "after_seq": after, "limit": min(count, 1000)},
                    headers={"x-backchannel-internal": self.settings.internal_secret})
                if resp.status_code == 200 and resp.json().get("ok"):
                    return resp.json()["events"]
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("event log fetch failed: %s", type(exc).__name__)
        self.discovery.forget("webapp")
        return None

    async def _on_ring_change(self, before: Ring, after: Ring) -> None:
        """Streams that moved away: tell their subscribers, forget their state."""
        lost = [s for s in set(self.subs) | set(self.streams) if not self.owns(s, after)]
        by_link: dict[GatewayLink, list[str]] = {}
        for stream in lost:
            for link in self.subs.pop(stream, set()):
                link.streams.discard(stream)
                by_link.setdefault(link, []).append(stream)
            self.streams.pop(stream, None)
        for link, streams in by_link.items():
            frame = wire.dumps({"type": "moved", "epoch": after.epoch, "streams": streams})
            try:
                link.send.send_nowait(Control(frame))
            except trio.WouldBlock:
                self._drop_link(link)


async def main(settings: Settings, name: str, port: int, http_port: int,
               addr_file: Any = None, *,
               task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
    from trio_websocket import serve_websocket

    watcher = service.RingWatcher(settings)
    server = ChannelServer(settings, name, watcher)
    async with httpx.AsyncClient(timeout=5.0) as http, trio.open_nursery() as nursery:
        server.http = http
        server.nursery = nursery
        await nursery.start(watcher.run)
        ws_server = await nursery.start(partial(
            serve_websocket, server.handle, settings.bind_host, port, None,
            max_message_size=wire.MAX_FRAME_BYTES))
        url = f"ws://{settings.bind_host}:{ws_server.port}"
        http_url = await nursery.start(service.serve_http,
                                       service.http_app("channel_server", server.status),
                                       settings.bind_host, http_port)
        await service.announce(settings, "channel_server", name, url, http_url, addr_file,
                               task_status)
