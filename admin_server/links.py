"""Persistent links from an admin server to each channel server, with reconnect and
per-frame acknowledgement."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from cluster import wire

log = logging.getLogger(__name__)
ACK_TIMEOUT_S = 2.0
CONNECT_WAIT_S = 0.5  # a link that is reconnecting gets this long; a dead one fails fast


class LinkDown(Exception):
    """The channel server could not be reached or did not answer in time."""


class _Slot:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: dict[str, Any] | None = None


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

    async def send(self, epoch: int, stream: str, seq: int, event: dict[str, Any]) -> str:
        """Forward one event; returns "ack" or "moved"; raises LinkDown."""
        with trio.move_on_after(CONNECT_WAIT_S):
            await self._up.wait()
        ws = self._ws
        if ws is None:
            raise LinkDown(self.name)
        frame_id = next(self._ids)
        slot = self._slots[frame_id] = _Slot()
        try:
            await ws.send_message(wire.dumps({"type": "event", "id": frame_id, "epoch": epoch,
                                              "stream": stream, "seq": seq, "event": event}))
            with trio.move_on_after(ACK_TIMEOUT_S):
                await slot.done.wait()
        except ConnectionClosed as exc:
            raise LinkDown(self.name) from exc
        finally:
            self._slots.pop(frame_id, None)
        if slot.reply is None:
            raise LinkDown(self.name)
        return slot.reply["type"]
