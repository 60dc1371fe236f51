"""Persistent links from an admin server to each channel server, with reconnect and
per-frame acknowledgement.

One ``publish`` frame carries every event of one notify that a channel server owns, and is
acknowledged once (cluster/wire.py): a post costs one frame and one ack per owner, not one
per event. Items are encoded once with orjson and spliced into the frame; a batch larger
than FRAME_BUDGET goes out as several frames, so no frame nears the link's size limit.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from cluster import wire

log = logging.getLogger(__name__)
ACK_TIMEOUT_S = 2.0
CONNECT_WAIT_S = 0.5  # a link that is reconnecting gets this long; a dead one fails fast
FRAME_BUDGET = 1 << 20  # bytes of items per publish frame (the link allows 4 MiB)


class LinkDown(Exception):
    """The channel server could not be reached or did not answer in time."""


class _Slot:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: dict[str, Any] | None = None


def encode_item(stream: str, seq: int, event: dict[str, Any]) -> bytes:
    """One event of a publish frame. Not what clients get: the channel server re-encodes
    the event deterministically (wire.encode_item), so orjson here changes no client byte."""
    try:
        return orjson.dumps({"stream": stream, "seq": seq, "event": event})
    except TypeError:  # an integer past 64 bits in a client's blocks: json takes it
        return wire.dumps({"stream": stream, "seq": seq, "event": event}).encode()


def chunks(items: list[bytes], budget: int = FRAME_BUDGET) -> Iterator[list[bytes]]:
    """Consecutive runs of encoded items of at most ``budget`` bytes (at least one each)."""
    run: list[bytes] = []
    size = 0
    for item in items:
        if run and size + len(item) > budget:
            yield run
            run, size = [], 0
        run.append(item)
        size += len(item) + 1
    if run:
        yield run


class ChannelLink:
    def __init__(self, name: str, url: str, sender: str, secret: str) -> None:
        self.name = name
        self.secret = secret
        self.url = url
        self.sender = sender
        self._ids = itertools.count(1)
        self._slots: dict[int, _Slot] = {}
        self._ws: Any = None
        self._up = trio.Event()
        self.cancel = trio.CancelScope()
        self.frames = 0  # publish frames sent (tests)

    @property
    def up(self) -> bool:
        return self._ws is not None

    async def run(self) -> None:
        """Keep one connection open; reconnect with capped backoff."""
        backoff = 0.05
        with self.cancel:
            while True:
                try:
                    async with open_websocket_url(
                        self.url, max_message_size=wire.MAX_FRAME_BYTES, connect_timeout=2
                    ) as ws:
                        await ws.send_message(wire.dumps(
                            {"type": "hello", "role": "admin", "name": self.sender,
                             "secret": self.secret}))
                        self._ws, backoff = ws, 0.05
                        self._up.set()
                        log.info("link to %s up", self.name)
                        await self._read(ws)
                except* (OSError, ConnectionClosed, HandshakeError, trio.TooSlowError) as group:
                    log.warning("link to %s down: %s", self.name, wire.names(group))
                except* Exception:
                    log.exception("link to %s failed; reconnecting", self.name)
                finally:
                    self._ws = None
                    self._up = trio.Event()
                    self._fail_all()
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _read(self, ws: Any) -> None:
        while True:
            try:
                frame = wire.loads(await ws.get_message())
                slot = self._slots.pop(wire.field(frame, "id", int), None)
            except wire.BadFrame as exc:
                log.warning("bad frame from %s: %s", self.name, exc)
                continue
            if slot is not None:
                slot.reply = frame
                slot.done.set()

    def _fail_all(self) -> None:
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            slot.done.set()

    async def publish(self, epoch: int, items: list[bytes]) -> tuple[set[str], set[str]]:
        """Hand a batch of encoded items (encode_item) to the channel server; returns the
        streams it does not own at ``epoch`` or later (moved: none of their events was
        taken) and the streams whose fanout is behind. Raises LinkDown."""
        moved: set[str] = set()
        behind: set[str] = set()
        runs = list(chunks(items))
        results: list[dict[str, Any]] = []

        async def one(run: list[bytes]) -> None:
            results.append(await self._request(epoch, run))

        if len(runs) == 1:  # the common case, without a task of its own
            await one(runs[0])
        else:
            async with trio.open_nursery() as nursery:
                for run in runs:
                    nursery.start_soon(one, run)
        for reply in results:
            moved.update(_streams(reply, "moved"))
            behind.update(_streams(reply, "behind"))
        return moved, behind

    async def _request(self, epoch: int, items: list[bytes]) -> dict[str, Any]:
        if self._ws is None:
            with trio.move_on_after(CONNECT_WAIT_S):
                await self._up.wait()
        ws = self._ws
        if ws is None:
            raise LinkDown(self.name)
        frame_id = next(self._ids)
        slot = self._slots[frame_id] = _Slot()
        try:
            await ws.send_message(b'{"type":"publish","id":%d,"epoch":%d,"items":[%b]}' % (
                frame_id, epoch, b",".join(items)))
            self.frames += 1
            with trio.move_on_after(ACK_TIMEOUT_S):
                await slot.done.wait()
        except ConnectionClosed as exc:
            raise LinkDown(self.name) from exc
        finally:
            self._slots.pop(frame_id, None)
        if slot.reply is None or slot.reply.get("type") != "published":
            raise LinkDown(self.name)
        return slot.reply


def _streams(reply: dict[str, Any], name: str) -> list[str]:
    value = reply.get(name, [])
    return [s for s in value if isinstance(s, str)] if isinstance(value, list) else []
