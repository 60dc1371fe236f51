"""One connected RTM client: a bounded outbound queue and the frames it may send us."""

from __future__ import annotations

import itertools
import json
import logging
import math
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

log = logging.getLogger(__name__)
_conn_ids = itertools.count(1)
GOODBYE = json.dumps({"type": "goodbye", "source": "gateway_server"})


class Client:
    def __init__(self, ws: WebSocketConnection, user: str, team: str, queue_size: int) -> None:
        self.id = next(_conn_ids)
        self.ws = ws
        self.user = user
        self.team = team
        self.streams: set[str] = set()
        self.send, self.receive = trio.open_memory_channel[str](queue_size)
        self.kicked = trio.Event()
        self.kick_reason = ""

    def push(self, payload: str) -> None:
        """Queue without blocking; a client that cannot keep up is disconnected."""
        if self.kicked.is_set():
            return
        try:
            self.send.send_nowait(payload)
        except trio.WouldBlock:
            self.kick("too slow")

    def kick(self, reason: str) -> None:
        if not self.kicked.is_set():
            self.kick_reason = reason
            self.kicked.set()

    async def writer(self) -> None:
        async for payload in self.receive:
            await self.ws.send_message(payload)

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
