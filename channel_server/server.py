"""The channel server process: WebSocket links from admin servers (events in) and gateways
(subscriptions in, event batches out), plus a small HTTP surface for health and metrics.

Positions: a gateway subscribes to a stream with the last seq it has (``after``), or with
none to start from now. The server loads the stream's head from the event log the first
time it touches the stream, catches the gateway up from its recent buffer or the event log,
and only then answers ``subscribed`` (carrying each stream's position) on the same ordered
queue as the events, so the gateway sees: catch-up, then the answer, then live events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import httpx
import trio
from prometheus_client import Counter, Gauge
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from channel_server.eventlog import EventLog, EventLogUnavailable
from channel_server.streams import StreamState
from cluster import linksock, service, wire
from cluster.ring import Ring
from cluster.settings import Settings

log = logging.getLogger(__name__)

EVENTS_IN = Counter("backchannel_channel_server_events_total", "Events accepted from admins")
FRAMES_OUT = Counter("backchannel_channel_server_frames_total", "Frames sent to gateways")
GAPS = Counter("backchannel_channel_server_gap_repairs_total", "Gap repairs", ["outcome"])
CATCHUP = Counter("backchannel_channel_server_catchup_events_total",
                  "Events replayed to subscribers by position", ["source"])
LINKS = Gauge("backchannel_channel_server_gateway_links", "Connected gateway links")
QUEUED = Gauge("backchannel_channel_server_queue_length", "Items queued to gateways")
SUBS = Gauge("backchannel_channel_server_subscriptions", "Stream subscriptions held")
REPLAYED = Counter("backchannel_channel_server_replayed_events_total",
                   "Events sent to gateways for resuming clients")
MAX_BATCH = 256
REPLAY_PAGE = 1000
REPLAY_PAGE_BYTES = 1 << 20
REPLAY_CONCURRENCY = 16
MAX_HELD = 10_000
REPAIR_FAILURES = 3  # live events held for one stream while its subscriber catches up
HEAD_SWEEP_TICKS = 3  # a quiet stream's head is checked every 3 head_check_interval_s


class Control(str):
    """A whole frame queued to a gateway (e.g. "moved"), sent as is, never batched."""


class GatewayLink:
    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.send, self.receive = trio.open_memory_channel[str](size)
        self.streams: set[str] = set()
        # streams being caught up from the event log: their live events wait here, in order
        self.holding: dict[str, list[str]] = {}
        self.closed = trio.Event()


class ChannelServer:
    def __init__(self, settings: Settings, name: str, watcher: service.RingWatcher,
                 standby: bool = False) -> None:
        self.settings = settings
        self.name = name
        self.standby = standby  # offered to the ring manager as a spare for a dead member
        self.watcher = watcher
        self.slot: str | None = None
        self.http_url = ""
        self.links: set[GatewayLink] = set()
        self.subs: dict[str, set[GatewayLink]] = {}
        self.streams: dict[str, StreamState] = {}
        self.repairing: set[str] = set()
        self.log: EventLog | None = None
        self.nursery: trio.Nursery | None = None
        self._to_load: set[str] = set()
        self._load_wake = trio.Event()
        self.replay_limit = trio.CapacityLimiter(REPLAY_CONCURRENCY)
        watcher.listen(self._on_ring_change)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "slot": self.slot, "epoch": self.watcher.ring.epoch,
                "gateways": len(self.links), "streams": len(self.streams),
                "subscriptions": sum(map(len, self.subs.values()))}

    def lease(self) -> dict[str, Any]:
        """Extra lease fields: enough for a ring manager to rebuild a ring Redis lost."""
        return {"slot": self.slot, "epoch": self.watcher.ring.epoch, "http_url": self.http_url,
                "standby": self.standby}

    def owns(self, stream: str, ring: Ring | None = None) -> bool:
        # self.slot is set by the ring listener, which runs as soon as the watcher swaps in
        # a new ring: no scan of the members per event on the hot path
        slot = self.slot if ring is None else ring.config.slot_of(self.name)
        ring = ring or self.watcher.ring
        try:
            return slot is not None and ring.owner(stream) == slot
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
        """Publish frames from an admin: each answered once, saying which of its streams
        are not ours (moved: none of their events was taken) and which are behind."""
        while True:
            frame = wire.loads(await ws.get_message())
            if frame["type"] != "publish":
                raise wire.BadFrame("an admin sends publish frames only")
            frame_id = wire.field(frame, "id", int)
            items = _publish_items(frame)
            if wire.field(frame, "epoch", int) > self.watcher.ring.epoch:
                await self.watcher.refresh()
            # no await from here to the answer: ownership is judged on one ring
            moved: set[str] = set()
            taken: set[str] = set()
            for stream, seq, event in items:
                if stream in moved or not self.owns(stream):
                    moved.add(stream)
                    continue
                self.accept(stream, seq, event)
                taken.add(stream)
            behind = [s for s in taken if self._behind(s)]
            await ws.send_message(wire.dumps(
                {"type": "published", "id": frame_id, "epoch": self.watcher.ring.epoch,
                 "moved": sorted(moved), "behind": behind}))

    def _behind(self, stream: str) -> bool:
        """Pushback: a subscribed gateway link has more than fanout_behind_items queued
        (posters to the stream are then answered ratelimited: docs/architecture.md)."""
        limit = self.settings.fanout_behind_items
        return any(link.receive.statistics().current_buffer_used > limit
                   for link in self.subs.get(stream, ()))

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
                    await self._gateway_frame(link, frame)
        finally:
            self._drop_link(link)

    async def _gateway_frame(self, link: GatewayLink, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "ephemeral":
            self._ephemeral(frame)
            return
        if kind == "replay":
            request = _replay_request(frame)
            if self.nursery is not None:
                self.nursery.start_soon(self._replay, link, *request)
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
        await self._subscribe(link, streams, _positions(frame), frame.get("id"))

    async def _subscribe(self, link: GatewayLink, streams: list[str], after: dict[str, int],
                         frame_id: Any) -> None:
        moved = [s for s in streams if not self.owns(s)]
        mine = [s for s in streams if s not in set(moved)]
        await self._load(mine)
        for stream in mine:
            if stream not in self.streams or not self.streams[stream].loaded:
                # lost and regained while we awaited (a ring flapping): a fresh state
                await self._load([stream])
            if link.closed.is_set() or not self.owns(stream) or stream not in self.streams:
                continue  # the ring moved on while we loaded: the answer below says so
            self.subs.setdefault(stream, set()).add(link)
            link.streams.add(stream)
            if stream in after:
                await self._catch_up(link, stream, after[stream])
        SUBS.set(sum(map(len, self.subs.values())))
        moved += [s for s in mine if s not in link.streams]
        positions = {s: self.streams[s].head for s in mine
                     if s in link.streams and s in self.streams and self.streams[s].loaded}
        # the answer rides the event queue: it reaches the gateway after the catch-up
        self._queue(link, Control(wire.dumps({
            "type": "subscribed", "id": frame_id, "epoch": self.watcher.ring.epoch,
            "moved": moved, "positions": positions})))

    async def _catch_up(self, link: GatewayLink, stream: str, after: int) -> None:
        """Queue what a subscriber at ``after`` lacks: from the recent buffer if it reaches
        back far enough, else from the event log while its live events are held."""
        state = self.streams[stream]
        backlog = state.backlog(after)
        if backlog is not None:
            CATCHUP.labels("buffer").inc(len(backlog))
            for _, item in backlog:
                self._queue(link, item)
            return
        link.holding[stream] = []
        try:
            upto = state.head
            fetched = await self.log.fetch(stream, after, upto)  # type: ignore[union-attr]
            CATCHUP.labels("log").inc(len(fetched))
            for seq, event in fetched:
                await link.send.send(wire.encode_item(stream, seq, event))
        finally:
            held = link.holding.pop(stream, [])
        for item in held:
            self._queue(link, item)

    async def _replay(self, link: GatewayLink, frame_id: int, stream: str, after: int,
                      upto: int) -> None:
        """One page of a stream's events for one resuming client of a gateway, answered
        out of band (the gateway holds that client's live events meanwhile). Not on the
        reader: a page from the event log must not hold up the link's other frames."""
        error = ""
        async with self.replay_limit:
            try:
                items = await self._replay_items(stream, after, upto)
            except EventLogUnavailable:
                items, error = [], "unavailable"
        if link.closed.is_set():
            return
        REPLAYED.inc(len(items or ()))
        self._queue(link, Control(
            f'{{"type":"replayed","id":{frame_id},"stream":{wire.dumps_str(stream)},'
            f'"moved":{"true" if items is None else "false"},"error":"{error}",'
            f'"items":[{",".join(items or ())}]}}'))

    async def _replay_items(self, stream: str, after: int, upto: int) -> list[str] | None:
        """Items with after < seq <= upto, in order, at most one page (by count and bytes):
        from the recent buffer when it reaches back, else the event log. None: not ours."""
        if not self.owns(stream):
            return None
        await self._load([stream])
        state = self.streams.get(stream)
        if state is None or not state.loaded or not self.owns(stream):
            return None
        upto = min(upto, after + REPLAY_PAGE)
        backlog = state.backlog(after) if upto <= state.head else None
        if backlog is not None:
            return _page([item for seq, item in backlog if seq <= upto])
        # past our head (we took the stream over after the gateway saw those events from
        # its old owner), or before our buffer: the log has every committed event
        fetched = await self.log.fetch(stream, after, upto)  # type: ignore[union-attr]
        return _page([wire.encode_item(stream, seq, event) for seq, event in fetched])

    def _queue(self, link: GatewayLink, item: str) -> None:
        try:
            link.send.send_nowait(item)
        except trio.WouldBlock:
            # never stall the fanout for one gateway: drop the link, it resubscribes
            log.warning("gateway %s queue full, closing link", link.name)
            self._drop_link(link)

    def _ephemeral(self, frame: dict[str, Any]) -> None:
        """Events never stored or ordered (user_typing): straight to the subscribers."""
        stream = wire.field(frame, "stream", str)
        event = wire.field(frame, "event", dict)
        if self.owns(stream):
            self._fanout(stream, [(0, wire.encode_item(stream, 0, event))])

    def _unsubscribe(self, link: GatewayLink, stream: str) -> None:
        link.streams.discard(stream)
        link.holding.pop(stream, None)
        subscribers = self.subs.get(stream)
        if subscribers is not None:
            subscribers.discard(link)
            if not subscribers:
                del self.subs[stream]

    def _drop_link(self, link: GatewayLink) -> None:
        if link.closed.is_set():
            return
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

    def _state(self, stream: str) -> StreamState:
        state = self.streams.get(stream)
        if state is None:
            state = self.streams[stream] = StreamState(self.settings.recent_buffer_size)
        return state

    def accept(self, stream: str, seq: int, event: dict[str, Any]) -> None:
        EVENTS_IN.inc()
        if seq == 0:
            # ephemeral (chat.postEphemeral): not in the log, so not ordered, not buffered
            self._fanout(stream, [(0, wire.encode_item(stream, 0, event))])
            return
        state = self._state(stream)
        self._fanout(stream, state.offer(seq, wire.encode_item(stream, seq, event)))
        if not state.loaded:
            self._to_load.add(stream)
            self._load_wake.set()
        self._watch_gap(stream, state)

    def _watch_gap(self, stream: str, state: StreamState) -> None:
        if state.gap and stream not in self.repairing and self.nursery is not None:
            self.repairing.add(stream)
            self.nursery.start_soon(self._repair, stream)

    def _fanout(self, stream: str, ready: Iterable[tuple[int, str]]) -> None:
        for _, item in ready:
            for link in list(self.subs.get(stream, ())):
                held = link.holding.get(stream)
                if held is None:
                    self._queue(link, item)
                elif len(held) < MAX_HELD:
                    held.append(item)
                else:
                    self._drop_link(link)
        QUEUED.set(sum(link.receive.statistics().current_buffer_used for link in self.links))

    async def loader(self) -> None:
        """Load, in batches, the streams that events arrived for before anyone subscribed."""
        while True:
            await self._load_wake.wait()
            self._load_wake = trio.Event()
            todo, self._to_load = list(self._to_load), set()
            try:
                await self._load(todo)
            except EventLogUnavailable:
                log.warning("could not load %d streams; retrying on the next event", len(todo))

    async def _load(self, streams: list[str]) -> None:
        """Learn the head of every stream not loaded yet (one batched read, retried with
        backoff), then deliver whatever waited for it."""
        todo = [s for s in streams if not self._state(s).loaded]
        if not todo:
            return
        delay = 0.05
        for attempt in range(6):
            try:
                heads = await self.log.heads(todo)  # type: ignore[union-attr]
                break
            except EventLogUnavailable:
                if attempt == 5:
                    raise
                await trio.sleep(delay)
                delay *= 2
        for stream, head in heads.items():
            state = self.streams.get(stream)
            if state is not None and not state.loaded and self.owns(stream):
                self._fanout(stream, state.load(head))
                self._watch_gap(stream, state)

    async def _repair(self, stream: str) -> None:
        """Wait briefly for late events; then fill gaps from the event log for as long as
        there are any. A gap is skipped only when the log itself could not fill it
        (REPAIR_FAILURES times in a row): running out of rounds while new gaps keep
        opening must never drop events the log has."""
        try:
            await trio.sleep(self.settings.gap_wait_s)
            failures = 0
            while failures < REPAIR_FAILURES:
                state = self.streams.get(stream)
                if state is None or state.gap is None:
                    return
                first, upto = state.gap
                try:
                    fetched = await self.log.fetch(stream, first - 1,  # type: ignore[union-attr]
                                                   upto - 1)
                except OSError:
                    failures += 1
                    await trio.sleep(self.settings.gap_wait_s)
                    continue
                if self.streams.get(stream) is not state:
                    return  # moved away meanwhile
                for seq, event in fetched:
                    self._fanout(stream, state.offer(seq, wire.encode_item(stream, seq, event)))
                if state.gap is not None and state.gap[0] == first:
                    failures += 1
                else:
                    failures = 0
                    GAPS.labels("repaired").inc()
            state = self.streams.get(stream)
            if state is not None and state.gap is not None:
                GAPS.labels("skipped").inc()
                log.error("gap on stream not repairable, skipping seqs=%d",
                          state.gap[1] - state.gap[0])
                self._fanout(stream, state.skip_gap())
        finally:
            self.repairing.discard(stream)
            state = self.streams.get(stream)
            if state is not None:
                self._watch_gap(stream, state)  # a gap that opened as we were leaving

    async def check_heads(self) -> None:
        """Periodically compare the heads of subscribed streams with the event log: a lost
        notification of a quiet stream's last event shows up here, not only when a later
        event arrives. Each tick checks the streams that moved since the last one (a lost
        last event of a burst) and a rotating slice of the others: every stream at least
        every HEAD_SWEEP_TICKS ticks. Checking all 5,000 of a large gateway's streams
        every second kept a webapp 10 % busy with nothing posted."""
        tick = 0
        known: dict[str, int] = {}
        while True:
            await trio.sleep(self.settings.head_check_interval_s)
            tick += 1
            streams, known = self._heads_to_check(tick % HEAD_SWEEP_TICKS, known)
            if not streams:
                continue
            try:
                heads = await self.log.heads(streams)  # type: ignore[union-attr]
            except OSError as exc:
                log.warning("head check failed: %s", exc)
                continue
            for stream, head in heads.items():
                state = self.streams.get(stream)
                if state is not None and state.loaded:
                    state.saw_head(head)
                    self._watch_gap(stream, state)

    def _heads_to_check(self, slot: int, known: dict[str, int],
                        ) -> tuple[list[str], dict[str, int]]:
        """(streams to check this tick, each loaded stream's head now)."""
        streams, now = [], {}
        for i, stream in enumerate(self.subs):
            state = self.streams.get(stream)
            if state is None or not state.loaded:
                continue
            now[stream] = state.head
            if i % HEAD_SWEEP_TICKS == slot or known.get(stream) != state.head:
                streams.append(stream)
        return streams, now

    async def _on_ring_change(self, before: Ring, after: Ring) -> None:
        """Streams that moved away: tell their subscribers, forget their state."""
        self.slot = after.config.slot_of(self.name)
        lost = [s for s in set(self.subs) | set(self.streams) if not self.owns(s, after)]
        by_link: dict[GatewayLink, list[str]] = {}
        for stream in lost:
            for link in self.subs.pop(stream, set()):
                link.streams.discard(stream)
                link.holding.pop(stream, None)
                by_link.setdefault(link, []).append(stream)
            self.streams.pop(stream, None)
        SUBS.set(sum(map(len, self.subs.values())))
        for link, streams in by_link.items():
            self._queue(link, Control(wire.dumps(
                {"type": "moved", "epoch": after.epoch, "streams": streams})))

    async def streams_endpoint(self, request: Request) -> Response:
        """The live stream list (stream -> subscribed gateways), for `ring --dry-run`."""
        if not wire.secret_matches(request.headers.get("x-backchannel-internal"),
                                   self.settings.internal_secret):
            return JSONResponse({"ok": False, "error": "not_allowed"}, status_code=403)
        return JSONResponse({"ok": True, "streams": {s: len(g) for s, g in self.subs.items()}})


def _publish_items(frame: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    items = wire.field(frame, "items", list)
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise wire.BadFrame("publish item")
        seq = wire.field(item, "seq", int)
        if seq < 0:
            raise wire.BadFrame("seq")
        out.append((wire.field(item, "stream", str), seq, wire.field(item, "event", dict)))
    return out


def _replay_request(frame: dict[str, Any]) -> tuple[int, str, int, int]:
    frame_id = wire.field(frame, "id", int)
    stream = wire.field(frame, "stream", str)
    after, upto = wire.field(frame, "after", int), wire.field(frame, "upto", int)
    if not 0 < len(stream) <= 64 or not 0 <= after <= upto < 2**62:
        raise wire.BadFrame("replay needs a stream id and 0 <= after <= upto")
    return frame_id, stream, after, upto


def _page(items: list[str]) -> list[str]:
    """The longest prefix within REPLAY_PAGE_BYTES (at least one item): one answer frame
    stays far below the link's frame limit however large the messages are."""
    size = 0
    for n, item in enumerate(items):
        size += len(item)
        if size > REPLAY_PAGE_BYTES and n > 0:
            return items[:n]
    return items


def _positions(frame: dict[str, Any]) -> dict[str, int]:
    after = frame.get("after", {})
    if not isinstance(after, dict) or len(after) > 100_000 or not all(
        isinstance(s, str) and type(q) is int and 0 <= q < 2**62 for s, q in after.items()
    ):
        raise wire.BadFrame("field 'after' must map stream ids to seqs")
    return after


async def main(settings: Settings, name: str, port: int, http_port: int,
               addr_file: Any = None, *, standby: bool = False,
               task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
    from trio_websocket import WebSocketServer

    watcher = service.RingWatcher(settings)
    server = ChannelServer(settings, name, watcher, standby)
    async with httpx.AsyncClient(timeout=5.0) as http, trio.open_nursery() as nursery:
        server.log = EventLog(settings, http)
        server.nursery = nursery
        await nursery.start(watcher.run)
        nursery.start_soon(server.check_heads)
        nursery.start_soon(server.loader)
        # small socket buffers toward gateways: a backlog waits in our queue, where it is
        # batched and seen by pushback (cluster/linksock.py)
        ws_server = WebSocketServer(server.handle,
                                    await linksock.listeners(settings.bind_host, port),
                                    max_message_size=wire.MAX_FRAME_BYTES)
        await nursery.start(ws_server.run)
        url = f"ws://{settings.bind_host}:{ws_server.port}"
        app = service.http_app("channel_server", server.status,
                               [Route("/streams", server.streams_endpoint, methods=["GET"])])
        http_url = server.http_url = await nursery.start(service.serve_http, app,
                                                         settings.bind_host, http_port)
        await service.announce(settings, "channel_server", name, url, http_url, addr_file,
                               task_status, server.lease)
