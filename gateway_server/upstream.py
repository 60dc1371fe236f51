"""The gateway's persistent link to one channel server: subscriptions out, batches in."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from cluster import linksock, wire
from cluster.batching import BatchFailed, Coalescer

log = logging.getLogger(__name__)
SUBSCRIBE_TIMEOUT_S = 5.0
CHUNK = 5000
RECEIVE_BYTES = 65_536  # a batch of 256 events is ~90 KB: a few reads, not twenty

FrameHandler = Callable[["Upstream", dict[str, Any]], Awaitable[None]]
AnswerHandler = Callable[["Upstream", dict[str, Any], set[str]], None]
Positions = Callable[[Iterable[str]], dict[str, int]]


class Upstream:
    def __init__(self, member: str, url: str, gateway: str, secret: str,
                 wanted: Callable[[], set[str]], on_frame: FrameHandler,
                 positions: Positions, on_subscribed: AnswerHandler,
                 before_read: Callable[[], Awaitable[None]] | None = None,
                 before_answer: Callable[[], None] | None = None) -> None:
        self.member = member
        self.secret = secret
        self.url = url
        self.gateway = gateway
        self.wanted = wanted  # the streams this member should serve us, under the current ring
        self.on_frame = on_frame
        self.positions = positions  # stream -> last seq we have, for streams we have one
        self.on_subscribed = on_subscribed
        # awaited before each frame is read: the gateway holds it while its clients' unsent
        # bytes are over its limit, so the backlog stays at the channel server (pushback)
        self.before_read = before_read
        # called before a subscribe answer or a replay page is taken: the gateway delivers
        # the events it received before it, keeping the link's frames in order
        self.before_answer = before_answer
        self.subscribed: set[str] = set()
        self._ws: Any = None
        self._up = trio.Event()
        self._ids = itertools.count(1)
        self._acks: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = {}
        # streams of each subscribe still unanswered: `subscribed` changes only in frame
        # order (the answer), and an unsubscribe or `moved` meanwhile takes them out here,
        # so a late answer cannot mark as subscribed a stream the server no longer serves us
        self._pending: dict[int, set[str]] = {}
        self._from: dict[int, set[str]] = {}  # the streams each subscribe sent a position for
        self.cancel = trio.CancelScope()
        self._epoch: Callable[[], int] = lambda: 0
        self._subscriber: Coalescer[str, bool] = Coalescer(self._subscribe_batch, CHUNK)

    async def run(self, epoch: Callable[[], int]) -> None:
        self._epoch = epoch
        with self.cancel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._subscriber.run)
                await self._connect_loop(epoch)

    async def _connect_loop(self, epoch: Callable[[], int]) -> None:
        backoff = 0.05
        while True:
            try:
                async with linksock.open_link(self.url, connect_timeout=2,
                                              max_message_size=wire.MAX_FRAME_BYTES,
                                              receive_buffer_size=RECEIVE_BYTES) as ws:
                    await ws.send_message(wire.dumps(
                        {"type": "hello", "role": "gateway", "name": self.gateway,
                         "secret": self.secret}))
                    self._ws, backoff = ws, 0.05
                    self._up.set()
                    log.info("upstream %s up", self.member)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._resubscribe_all, epoch())
                        await self._read(ws)
            # nurseries (ours and trio-websocket's) wrap errors in groups: match inside them
            except* (OSError, ConnectionClosed, HandshakeError, trio.TooSlowError) as group:
                log.warning("upstream %s down: %s", self.member, wire.names(group))
            except* Exception:
                log.exception("upstream %s failed; reconnecting", self.member)
            finally:
                self._ws = None
                self._up = trio.Event()
                self.subscribed.clear()
                self._pending.clear()
                self._from.clear()
                for done, _ in self._acks.values():
                    done.set()
                self._acks.clear()
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _resubscribe_all(self, epoch: int) -> None:
        await self.subscribe(self.wanted(), epoch)

    async def _read(self, ws: Any) -> None:
        while True:
            if self.before_read is not None:
                await self.before_read()
            try:
                frame = wire.loads(await ws.get_message())
            except wire.BadFrame as exc:
                log.warning("bad frame from %s: %s", self.member, exc)
                continue
            if frame["type"] in ("replayed", "subscribed") and self.before_answer is not None:
                self.before_answer()
            if frame["type"] == "replayed":
                waiter = self._acks.pop(frame.get("id"), None)  # type: ignore[arg-type]
                if waiter is not None:
                    waiter[1].append(frame)
                    waiter[0].set()
                continue
            if frame["type"] == "subscribed":
                # subscriptions and positions are taken here, in frame order: the live
                # events that follow this answer are judged against them
                asked = self._pending.pop(frame.get("id"), set())  # type: ignore[arg-type]
                caught_up = self._from.pop(frame.get("id"), set())  # type: ignore[arg-type]
                moved = frame.get("moved")
                self.subscribed.update(asked - set(moved if isinstance(moved, list) else ()))
                try:
                    self.on_subscribed(self, frame, caught_up)
                except wire.BadFrame as exc:
                    log.warning("bad subscribed frame from %s: %s", self.member, exc)
                waiter = self._acks.pop(frame.get("id"), None)  # type: ignore[arg-type]
                if waiter is not None:
                    waiter[1].append(frame)
                    waiter[0].set()
                continue
            try:
                await self.on_frame(self, frame)
            except wire.BadFrame as exc:
                log.warning("bad %s frame from %s: %s", frame["type"], self.member, exc)

    async def subscribe(self, streams: Iterable[str], epoch: int) -> list[str]:
        """Subscribe, each stream from the position we have (else from now), and wait for
        the channel server's answer, which comes after any catch-up; returns streams it
        refused as moved. Raises trio.TooSlowError if the link stays down. Concurrent
        calls (clients connecting at once) share one subscribe frame; it carries the
        newest ring epoch, which is at least the one each caller saw."""
        wanted = set(streams)
        with trio.fail_after(SUBSCRIBE_TIMEOUT_S):
            await self._up.wait()
            try:
                moved = await self._subscriber.get(wanted)
            except BatchFailed as exc:
                raise trio.TooSlowError from exc
        return sorted(s for s in wanted if moved.get(s))

    async def _subscribe_batch(self, streams: list[str]) -> dict[str, bool]:
        """stream -> refused as moved, for one batch of subscriptions."""
        streams = sorted(streams)
        epoch = self._epoch()
        moved: set[str] = set()
        # bounded here, not only by the callers' deadlines: an answer that never comes must
        # fail this batch, not hold every later subscribe on this link behind it
        with trio.fail_after(SUBSCRIBE_TIMEOUT_S):
            for start in range(0, len(streams), CHUNK):
                moved.update(await self._request("subscribe", streams[start:start + CHUNK],
                                                 epoch))
        return {s: s in moved for s in streams}

    async def replay(self, stream: str, after: int, upto: int) -> list[tuple[int, str]] | None:
        """One page of (after, upto] for a resuming client, as (seq, payload); None when
        this member no longer owns the stream or could not read the log. Raises
        trio.TooSlowError if the link is down or the answer does not come."""
        request = {"type": "replay", "id": next(self._ids), "stream": stream, "after": after,
                   "upto": upto}
        with trio.fail_after(SUBSCRIBE_TIMEOUT_S):
            frame = await self._ask(request)
        if frame.get("moved") is not False or frame.get("error"):
            return None
        return _page(frame.get("items"), stream)

    def held(self) -> set[str]:
        """Streams subscribed here, or asked for and not answered yet."""
        return self.subscribed.union(*self._pending.values())

    def forget(self, streams: Iterable[str]) -> set[str]:
        """No longer subscribed here (unsubscribed, or moved away); returns which were."""
        held = self.held()
        gone = {s for s in streams if s in held}
        self.subscribed.difference_update(gone)
        for asked in self._pending.values():
            asked.difference_update(gone)
        return gone

    async def unsubscribe(self, streams: Iterable[str], epoch: int) -> None:
        streams = sorted(self.forget(streams))
        ws = self._ws
        if ws is None or not streams:
            return
        try:
            await ws.send_message(wire.dumps(
                {"type": "unsubscribe", "epoch": epoch, "streams": streams}))
        except ConnectionClosed:
            pass

    async def send(self, frame: dict[str, Any]) -> None:
        ws = self._ws
        if ws is not None:
            try:
                await ws.send_message(wire.dumps(frame))
            except ConnectionClosed:
                pass

    async def _request(self, kind: str, streams: list[str], epoch: int) -> list[str]:
        if self._ws is None:
            raise trio.TooSlowError
        frame_id = next(self._ids)
        self._pending[frame_id] = set(streams)
        after = self.positions(streams)
        self._from[frame_id] = set(after)
        reply = await self._ask({"type": kind, "id": frame_id, "epoch": epoch,
                                 "streams": streams, "after": after})
        return [s for s in reply.get("moved", []) if isinstance(s, str)]

    async def _ask(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame carrying a fresh ``id`` and wait for the answer with that id; raises
        trio.TooSlowError if the link is or goes down first."""
        ws = self._ws
        if ws is None:
            raise trio.TooSlowError
        done, replies = trio.Event(), []
        self._acks[frame["id"]] = (done, replies)
        try:
            await ws.send_message(wire.dumps(frame))
            await done.wait()
        except ConnectionClosed as exc:
            raise trio.TooSlowError from exc
        finally:
            self._acks.pop(frame["id"], None)
        if not replies:
            raise trio.TooSlowError  # the link went down meanwhile
        return replies[0]


def _page(items: Any, stream: str) -> list[tuple[int, str]]:
    """(seq, payload) of a replayed page's items; anything malformed is left out (the
    cursor then asks for the missing seqs again)."""
    page = []
    for item in items if isinstance(items, list) else ():
        if (isinstance(item, dict) and item.get("stream") == stream
                and type(item.get("seq")) is int and isinstance(item.get("payload"), str)):
            page.append((item["seq"], item["payload"]))
    return page
