"""One connected RTM client: a bounded outbound queue and the frames it may send us."""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections import deque
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from gateway_server.resume import Cursor

log = logging.getLogger(__name__)
_conn_ids = itertools.count(1)
GOODBYE = json.dumps({"type": "goodbye", "source": "gateway_server"})


class Client:
    """Outbound: a bounded queue drained by one writer task. Nothing is queued before
    ``ready`` (the hello): a connection's events start at the positions its hello gives."""

    def __init__(self, ws: WebSocketConnection, user: str, team: str, queue_size: int) -> None:
        self.id = next(_conn_ids)
        self.ws = ws
        self.user = user
        self.team = team
        self.streams: set[str] = set()
        self.limit = queue_size
        self.queue: deque[str] = deque()
        self.ready = False
        self.kicked = trio.Event()
        self.kick_reason = ""
        self.cursors: dict[str, Cursor] = {}  # streams this client is still resuming
        self.replaying = False
        self.nursery: trio.Nursery | None = None
        self._typed: dict[str, float] = {}
        self._wake = trio.Event()
        self._room = trio.Event()

    def push(self, payload: str) -> None:
        """Queue without blocking; a client that cannot keep up is disconnected."""
        if not self.ready or self.kicked.is_set():
            return
        if len(self.queue) >= self.limit:
            self.kick("too slow")
            return
        self.queue.append(payload)
        self._wake.set()

    async def push_paced(self, payload: str) -> None:
        """Queue a replayed event once the queue is at most half full: a long replay goes
        at the socket's pace and leaves room for live events meanwhile."""
        while len(self.queue) >= self.limit // 2 and not self.kicked.is_set():
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()
        self.push(payload)

    def kick(self, reason: str) -> None:
        if not self.kicked.is_set():
            self.kick_reason = reason
            self.kicked.set()

    def may_type(self, channel: str, now: float, interval: float) -> bool:
        """At most one typing event per channel per ``interval``: a typing flood costs the
        other members nothing."""
        if now - self._typed.get(channel, -interval) < interval:
            return False
        self._typed[channel] = now
        return True

    async def writer(self) -> None:
        while True:
            while self.queue:
                payload = self.queue.popleft()
                if len(self.queue) < self.limit // 2:
                    self._room.set()
                await self.ws.send_message(payload)
            self._wake = trio.Event()
            await self._wake.wait()

    async def say_goodbye(self) -> None:
        with trio.move_on_after(1):
            try:
                await self.ws.send_message(GOODBYE)
                await self.ws.aclose(code=1001, reason=self.kick_reason[:100])
            except ConnectionClosed:
                pass


def handle_frame(client: Client, raw: str | bytes) -> tuple[str | None, str | None]:
    """A client frame -> (reply to queue, channel the user is typing in). Never raises."""
    try:
        frame: Any = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _error(None, 1, "invalid json"), None
    if not isinstance(frame, dict):
        return _error(None, 1, "invalid json"), None
    reply_to = frame.get("id")
    if not isinstance(reply_to, int | str) or isinstance(reply_to, bool):
        reply_to = None
    kind = frame.get("type")
    if kind == "ping":
        pong: dict[str, Any] = {"type": "pong", "reply_to": reply_to}
        stamp = frame.get("time")
        if isinstance(stamp, str) or isinstance(stamp, int | float) and math.isfinite(stamp):
            pong["time"] = stamp
        return json.dumps(pong), None
    if kind == "typing":
        channel = frame.get("channel")
        if not isinstance(channel, str) or channel not in client.streams:
            return _error(reply_to, 3, "channel_not_found"), None
        return None, channel
    return _error(reply_to, 2, "unsupported message type"), None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity would make our replies invalid


def _error(reply_to: Any, code: int, msg: str) -> str:
    body: dict[str, Any] = {"type": "error", "error": {"code": code, "msg": msg}}
    if reply_to is not None:
        body["reply_to"] = reply_to
        body["ok"] = False
    return json.dumps(body)
