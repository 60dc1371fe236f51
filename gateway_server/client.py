"""One connected RTM client: a bounded outbound queue and the frames it may send us."""

from __future__ import annotations

import dataclasses
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
# RTM messages one socket may have waiting to be posted; one more is refused, not queued
MAX_SENDS_IN_FLIGHT = 8
MAX_CLIENT_MSG_ID = 64


@dataclasses.dataclass(frozen=True)
class Send:
    """A chat message a client sent over its socket, for the gateway to post on its behalf
    (``{"type":"message","id":N,"channel":C,"text":T}``, as Slack's RTM takes it)."""

    reply_to: int | str | None
    channel: str
    text: str
    thread_ts: str | None = None
    client_msg_id: str | None = None


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
        # RTM messages wait here for the client's one poster task: posted in order, and a
        # full queue refuses the next one at once instead of stalling the socket's reader
        self.sends, self.to_post = trio.open_memory_channel[Send](MAX_SENDS_IN_FLIGHT)

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

    def queue_send(self, send: Send) -> bool:
        """Queue an RTM message for posting; False when MAX_SENDS_IN_FLIGHT are waiting."""
        try:
            self.sends.send_nowait(send)
        except trio.WouldBlock:
            return False
        return True

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


def handle_frame(client: Client, raw: str | bytes) -> tuple[str | None, str | Send | None]:
    """A client frame -> (reply to queue, what to do: the channel the user is typing in, or
    a message to post). Never raises."""
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
    if kind == "message":
        return _send(frame, reply_to)
    return _error(reply_to, 2, "unsupported message type"), None


def _send(frame: dict[str, Any], reply_to: Any) -> tuple[str | None, Send | None]:
    """A message frame, checked for shape only: the webapp decides whether the user may post
    there (and answers with Slack's error codes)."""
    channel, text = frame.get("channel"), frame.get("text")
    thread_ts, cmid = frame.get("thread_ts"), frame.get("client_msg_id")
    if not _utf8(channel) or not channel:
        return rtm_error(reply_to, "channel_not_found"), None
    if text is None or text == "":
        return rtm_error(reply_to, "message text is missing"), None  # Slack's own words
    if not _utf8(text):
        return rtm_error(reply_to, "invalid_arguments"), None
    if thread_ts is not None and not _utf8(thread_ts):
        return rtm_error(reply_to, "thread_not_found"), None
    if cmid is not None and not (_utf8(cmid) and 0 < len(cmid) <= MAX_CLIENT_MSG_ID):
        return rtm_error(reply_to, "invalid_arguments"), None
    return None, Send(reply_to, channel, text, thread_ts or None, cmid)


def _utf8(value: Any) -> bool:
    """A string that UTF-8 can carry: JSON's "\\ud800" escapes decode to lone surrogates,
    which no request to the webapp could encode."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def rtm_ok(reply_to: Any, ts: str, text: str) -> str:
    """Slack's answer to a posted RTM message: its ts and text as stored."""
    return json.dumps({"ok": True, "reply_to": reply_to, "ts": ts, "text": text})


def rtm_error(reply_to: Any, msg: str) -> str:
    """Slack's RTM error reply, ``{"ok":false,"reply_to":N,"error":{"code":2,"msg":..}}``;
    without an id to answer, the unsolicited error event."""
    if reply_to is None:
        return _error(None, 2, msg)
    return json.dumps({"ok": False, "reply_to": reply_to, "error": {"code": 2, "msg": msg}})


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity would make our replies invalid


def _error(reply_to: Any, code: int, msg: str) -> str:
    body: dict[str, Any] = {"type": "error", "error": {"code": code, "msg": msg}}
    if reply_to is not None:
        body["reply_to"] = reply_to
        body["ok"] = False
    return json.dumps(body)
