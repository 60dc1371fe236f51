"""One connected RTM client: its ordered output, and the frames it may send us.

Output (docs/performance.md, "The gateway's write path"): each event's WebSocket frame is
built once per gateway (``text_frame``) and the same bytes go to every recipient. A write
goes straight to the kernel when nothing is waiting for the socket, so a writable socket
costs one ``send()`` and no task switch; what the kernel does not take waits in the client's
buffer, and one flush task, started only then, writes everything waiting in one go.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
from collections import deque
from collections.abc import Callable
from typing import Any

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.frame_protocol import FrameProtocol

from gateway_server import sockets
from gateway_server.resume import Cursor

log = logging.getLogger(__name__)
_conn_ids = itertools.count(1)
GOODBYE = json.dumps({"type": "goodbye", "source": "gateway_server"})
# RTM messages one socket may have waiting to be posted; one more is refused, not queued
MAX_SENDS_IN_FLIGHT = 8
MAX_CLIENT_MSG_ID = 64
FLUSH_CHUNK = 65_536  # bytes per send while flushing: progress is seen between chunks
GOODBYE_WAIT_S = 1.0
# server frames are never masked, so one frame serves every socket; wsproto makes it
_FRAMES = FrameProtocol(client=False, extensions=[])


def text_frame(payload: str) -> bytes:
    """The complete WebSocket text frame (header and payload) carrying ``payload``."""
    return bytes(_FRAMES.send_data(payload, fin=True))


@dataclasses.dataclass(frozen=True)
class Limits:
    slow_bytes: int  # unsent bytes above which the client counts as not draining
    slow_after_s: float  # ... for longer than this: closed
    max_bytes: int  # unsent bytes above which it is closed at once


class Backlog:
    """Unsent bytes across a gateway's clients. Above ``limit`` the gateway stops reading
    its channel-server links until the clients drain: the backlog then builds at the channel
    servers, which push back on posters, instead of in this process's memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self._below = trio.Event()
        self._below.set()

    def add(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limit and self._below.is_set():
            self._below = trio.Event()

    def sub(self, n: int) -> None:
        self.bytes -= n
        if self.bytes <= self.limit:
            self._below.set()

    async def wait_below(self) -> None:
        await self._below.wait()


@dataclasses.dataclass(frozen=True)
class Send:
    """A chat message a client sent over its socket, for the gateway to post on its behalf
    (``{"type":"message","id":N,"channel":C,"text":T}``, as Slack's RTM takes it)."""

    reply_to: int | str | None
    channel: str
    text: str
    thread_ts: str | None = None
    client_msg_id: str | None = None


class Closed(Exception):
    """The client's socket is gone (reset, closed, or closed by us)."""


class Client:
    """A connected client. Nothing is written before ``ready`` (the hello): a connection's
    events start at the positions its hello gives. Slots: thousands of idle clients."""

    __slots__ = ("id", "proto", "user", "team", "streams", "ready", "kick_reason", "cursors",
                 "replaying", "scope", "posting", "_linked", "_typed", "_sends", "_limits",
                 "_spawn",
                 "_backlog", "_stream", "_pending", "_unsent", "_flushing", "_slow_since", "_wait",
                 "_broken", "_drained", "_room", "__weakref__")

    def __init__(self, stream: trio.SocketStream | None, proto: Connection | None, user: str,
                 team: str, limits: Limits, spawn: Callable[..., Any],
                 backlog: Backlog | None = None) -> None:
        self.id = next(_conn_ids)
        self.proto = proto  # the open WebSocket (wsproto); frames in, control frames out
        self.user = user
        self.team = team
        self.streams: set[str] = set()
        self.ready = False
        self.kick_reason = ""
        self.cursors: dict[str, Cursor] = {}  # streams this client is still resuming
        self.replaying = False
        self.scope = trio.CancelScope()  # the client's handler; a kick cancels it
        self.posting = False  # a poster task is running for this client
        self._linked: set[trio.CancelScope] | None = None
        self._typed: dict[str, float] | None = None
        self._sends: deque[Send] | None = None
        self._limits = limits
        self._spawn = spawn  # starts a task in the gateway's nursery
        self._backlog = backlog or Backlog(1 << 62)
        self._stream = stream
        self._pending: deque[bytes] | None = None  # made on the first partial write
        self._unsent = 0
        self._flushing = False
        self._slow_since: float | None = None
        self._wait: trio.CancelScope | None = None  # the flush's send, bounded when slow
        self._broken = False
        self._drained: trio.Event | None = None
        self._room: trio.Event | None = None

    @property
    def kicked(self) -> bool:
        return bool(self.kick_reason)

    @property
    def stream(self) -> trio.SocketStream | None:
        return self._stream

    @property
    def unsent(self) -> int:
        """Bytes written for this client that its socket has not taken yet."""
        return self._unsent

    # --- output --------------------------------------------------------------------------

    def push(self, payload: str) -> None:
        """Send one event (text); never blocks. Ignored before hello and after a kick."""
        if self.ready and not self.kick_reason:
            self.write(text_frame(payload))

    def push_frame(self, frame: bytes) -> None:
        """Send a frame built once for many clients (``text_frame``)."""
        if self.ready and not self.kick_reason:
            self.write(frame)

    async def push_paced(self, payload: str) -> None:
        """Queue a replayed event once at most half of ``slow_bytes`` is waiting: a long
        replay goes at the socket's pace and never makes its own client look slow."""
        while self._unsent > self._limits.slow_bytes // 2 and not self.kick_reason:
            if self._room is None:
                self._room = trio.Event()
            await self._room.wait()
        self.push(payload)

    def write(self, data: bytes) -> None:
        """Bytes for the socket, in order after everything written before."""
        if self._broken:
            return
        if not self._flushing:
            data = self._send_now(data)
            if not data:
                return
        if self._pending is None:
            self._pending = deque()
        self._pending.append(data)
        self._grow(len(data))
        if not self._flushing and not self._broken:
            self._flushing = True
            self._spawn(self._flush)

    def _send_now(self, data: bytes) -> bytes:
        """Hand ``data`` to the kernel without waiting; returns what it did not take."""
        fd = self._stream.socket.fileno() if self._stream is not None else -1
        if fd < 0:
            self._lost("closed")
            return b""
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            return data
        except OSError:  # reset or closed by the peer
            self._lost("closed")
            return b""
        return data[sent:]

    def _grow(self, n: int) -> None:
        self._unsent += n
        self._backlog.add(n)
        if self._unsent > self._limits.max_bytes:
            self.kick("too slow")
            self._abort()
        elif self._unsent > self._limits.slow_bytes and self._slow_since is None:
            self._slow_since = trio.current_time()
            if self._wait is not None:  # a send already waiting gets the deadline too
                self._wait.deadline = self._slow_since + self._limits.slow_after_s

    def _shrink(self, n: int) -> None:
        self._unsent -= n
        self._backlog.sub(n)
        if self._unsent <= self._limits.slow_bytes:
            self._slow_since = None
        if self._room is not None and self._unsent <= self._limits.slow_bytes // 2:
            self._room.set()
            self._room = None

    async def _flush(self) -> None:
        """Write what waits, in chunks, until nothing does. Over ``slow_bytes`` the socket
        must drain below it by ``slow_since + slow_after_s``, or the client is closed."""
        try:
            while self._pending and not self._broken:
                chunk = self._take(self._pending, FLUSH_CHUNK)
                deadline = math.inf
                if self._slow_since is not None:
                    deadline = self._slow_since + self._limits.slow_after_s
                with trio.move_on_at(deadline) as self._wait:
                    await self._stream.send_all(chunk)
                    if not self._broken:  # else _abort has already dropped the count
                        self._shrink(len(chunk))
                    continue
                self.kick("too slow")
                self._abort()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._lost("closed")
        finally:
            self._wait = None
            self._flushing = False
            if not self._pending:
                self._pending = None  # most clients are idle most of the time
            if self._drained is not None and (not self._pending or self._broken):
                self._drained.set()
                self._drained = None

    @staticmethod
    def _take(pending: deque[bytes], limit: int) -> bytes:
        first = pending.popleft()
        if not pending or len(first) >= limit:
            return first
        parts, size = [first], len(first)
        while pending and size + len(pending[0]) <= limit:
            part = pending.popleft()
            parts.append(part)
            size += len(part)
        return b"".join(parts)

    async def drained(self) -> None:
        """Until everything written so far has gone to the kernel (or the socket is gone)."""
        while self._flushing and not self._broken:
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()
        if self._broken:
            raise Closed

    def _lost(self, reason: str) -> None:
        self.kick(reason)
        self._abort()

    def _abort(self) -> None:
        """Drop what waits and close the socket now (it is not draining, or is gone)."""
        if self._broken:
            return
        self._broken = True
        if self._unsent:
            self._backlog.sub(self._unsent)
            self._unsent = 0
        self._pending = None
        if self._room is not None:
            self._room.set()
        if self._drained is not None:
            self._drained.set()
        if self._stream is not None:
            self._spawn(_close, self._stream)

    # --- input and state -----------------------------------------------------------------

    def queue_send(self, send: Send) -> bool:
        """Queue an RTM message for posting; False when MAX_SENDS_IN_FLIGHT are waiting.
        The queue exists from the first one on: most clients never send over the socket."""
        if self._sends is None:
            self._sends = deque()
        if len(self._sends) >= MAX_SENDS_IN_FLIGHT:
            return False
        self._sends.append(send)
        return True

    def next_send(self) -> Send | None:
        """The oldest queued RTM message, taken off the queue; None when there is none."""
        return self._sends.popleft() if self._sends else None

    def link(self, scope: trio.CancelScope) -> None:
        """A task working for this client: cancelled by its kick (at once if kicked)."""
        if self.kick_reason:
            scope.cancel()
        if self._linked is None:
            self._linked = set()
        self._linked.add(scope)

    def unlink(self, scope: trio.CancelScope) -> None:
        if self._linked is not None:
            self._linked.discard(scope)

    def kick(self, reason: str) -> None:
        if not self.kick_reason:
            self.kick_reason = reason
            self.scope.cancel()
            for scope in self._linked or ():
                scope.cancel()
        if self._room is not None:
            self._room.set()

    def may_type(self, channel: str, now: float, interval: float) -> bool:
        """At most one typing event per channel per ``interval``: a typing flood costs the
        other members nothing."""
        if self._typed is None:
            self._typed = {}
        if now - self._typed.get(channel, -interval) < interval:
            return False
        self._typed[channel] = now
        return True

    async def say_goodbye(self) -> None:
        """``goodbye`` after everything already written, then a close frame, then the
        socket closed; a socket that is not draining (or gone) is just closed."""
        if self._broken or self._stream is None:
            return
        if self.proto is not None and self.proto.state is ConnectionState.OPEN:
            self.write(text_frame(GOODBYE) + sockets.close_frame(
                self.proto, 1001, self.kick_reason[:100]))
        with trio.move_on_after(GOODBYE_WAIT_S):
            try:
                await self.drained()
            except Closed:
                return
            self._broken = True  # nothing more is written: the socket is closing
            await sockets.finish(self._stream)
            return
        self._abort()


async def _close(stream: trio.SocketStream) -> None:
    await trio.aclose_forcefully(stream)


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
