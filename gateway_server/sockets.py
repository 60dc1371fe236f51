"""Client WebSockets on wsproto, one trio task each (docs/performance.md, "Client sockets").

trio-websocket (which every internal link still uses) gives each connection a reader task,
a message channel, a nursery and several events, about 18 KB per idle socket before the
gateway adds anything; its ``send_message`` encodes per call and takes a task switch per
frame. A gateway holds thousands of mostly idle sockets and writes the same frame to many of
them, so it drives wsproto itself: the handshake through ``WSConnection``, then only the
open connection's ``Connection`` is kept, read by the client's own handler task, while all
writes, frames and control replies alike, go through the client's ordered output
(``gateway_server/client.py``). wsproto does all framing; nothing here parses bytes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT_S = 10.0  # connect to request headers; a silent socket is closed
RECEIVE_BYTES = 4096
CLOSE_WAIT_S = 1.0  # for the client's close reply after ours


class Gone(Exception):
    """The client's socket closed, or broke the protocol (we answered with a close)."""


@dataclasses.dataclass
class Closing:
    """What the client asked for when it closed, or what we closed it for."""

    code: int
    reason: str = ""


class Pending:
    """A client past its HTTP upgrade request, not yet accepted: ``path`` holds the
    ticket. Answer with :meth:`reject` or :meth:`accept`."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection, request: Request) -> None:
        self.stream = stream
        self.path = request.target
        self._ws: WSConnection | None = ws

    async def reject(self, status_code: int, *, body: bytes = b"") -> None:
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if self._ws is None:
            return
        try:
            data = self._ws.send(RejectConnection(status_code=status_code, headers=headers,
                                                  has_body=True))
            data += self._ws.send(RejectData(data=body))
            with trio.move_on_after(CLOSE_WAIT_S):
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError):
            pass

    async def accept(self) -> Connection:
        """Send the 101 and return the open connection (the handshake's state is dropped:
        an open connection never needs it again)."""
        ws, self._ws = self._ws, None  # the handler keeps this object: not the handshake
        assert ws is not None
        data = ws.send(AcceptConnection())
        await self.stream.send_all(data)
        proto = ws.connection
        assert proto is not None  # wsproto opens it as it makes the 101
        # a client may send its first frame right behind the request; wsproto's server
        # side leaves those bytes in the handshake's h11 buffer (its client side passes
        # them on), so hand them to the open connection ourselves
        h11_conn = getattr(ws.handshake, "_h11_connection", None)
        trailing = h11_conn.trailing_data[0] if h11_conn is not None else b""
        if trailing:
            proto.receive_data(bytes(trailing))
        # wsproto's Connection queues events in a deque (about 600 B per idle socket) only
        # for a transport loss reported as receive_data(None), which we never call: an
        # empty tuple reads the same in Connection.events()
        if not proto._events:
            proto._events = ()  # type: ignore[assignment]
        return proto


async def handshake(stream: trio.SocketStream) -> Pending | None:
    """Read the upgrade request; None (the socket answered and closed) for a client that
    sends no valid one in time."""
    ws = WSConnection(ConnectionType.SERVER)
    with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
        try:
            while True:
                data = await stream.receive_some(RECEIVE_BYTES)
                if not data:
                    return None
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        return Pending(stream, ws, event)
        except RemoteProtocolError as exc:
            if isinstance(exc.event_hint, RejectConnection):
                await _send_quietly(stream, ws.send(exc.event_hint))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    return None


async def _send_quietly(stream: trio.SocketStream, data: bytes) -> None:
    with trio.move_on_after(CLOSE_WAIT_S):
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def messages(stream: trio.SocketStream, proto: Connection, max_size: int,
                   write: Callable[[bytes], None]) -> AsyncIterator[str | bytes]:
    """The client's messages, whole, in order. Pings are answered, a close is answered;
    a message over ``max_size`` or a protocol error closes with the right code. Ends by
    raising :class:`Gone` (with the :class:`Closing`), never by returning."""
    parts: list[Any] = []
    size = 0
    while True:
        # events first: bytes that came right behind the upgrade request are already in
        # the connection, and must not wait for the client's next packet
        for event in proto.events():
            if isinstance(event, TextMessage | BytesMessage):
                size += len(event.data)
                if size > max_size:
                    write(proto.send(CloseConnection(CloseReason.MESSAGE_TOO_BIG,
                                                     "message too big")))
                    raise Gone(Closing(CloseReason.MESSAGE_TOO_BIG))
                parts.append(event.data)
                if event.message_finished:
                    whole = parts[0] if len(parts) == 1 else type(parts[0])().join(parts)
                    parts, size = [], 0
                    yield bytes(whole) if isinstance(whole, bytearray) else whole
            elif isinstance(event, Ping):
                write(proto.send(event.response()))
            elif isinstance(event, CloseConnection):
                if proto.state.name == "REMOTE_CLOSING":
                    write(proto.send(event.response()))
                raise Gone(Closing(event.code, event.reason or ""))
        try:
            data = await stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise Gone(Closing(CloseReason.ABNORMAL_CLOSURE)) from exc
        if not data:
            raise Gone(Closing(CloseReason.ABNORMAL_CLOSURE))
        proto.receive_data(data)


def close_frame(proto: Connection, code: int, reason: str) -> bytes:
    """Our close frame, or b"" when the connection is already closing."""
    try:
        return proto.send(CloseConnection(code=code, reason=reason))
    except LocalProtocolError:
        return b""


async def finish(stream: trio.SocketStream) -> None:
    """After our close frame: half-close, read what the client still sends (its close
    reply) for a moment, then close. Closing with unread input would send a reset, which
    can destroy our last frames before the client reads them."""
    with trio.move_on_after(CLOSE_WAIT_S):
        try:
            await stream.send_eof()
            while await stream.receive_some(RECEIVE_BYTES):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
    await trio.aclose_forcefully(stream)


@dataclasses.dataclass
class Listening:
    port: int


async def serve(handler: Callable[[trio.SocketStream], Awaitable[None]], host: str,
                port: int, *, handler_nursery: trio.Nursery,
                task_status: trio.TaskStatus[Listening] = trio.TASK_STATUS_IGNORED) -> None:
    """Accept TCP connections on ``host:port``; each runs ``handler`` in
    ``handler_nursery`` (so cancelling this stops accepting and leaves clients be)."""
    listeners = await trio.open_tcp_listeners(port, host=host)

    async def started(*, task_status: trio.TaskStatus[Any]) -> None:
        await trio.serve_listeners(handler, listeners, handler_nursery=handler_nursery,
                                   task_status=task_status)

    async with trio.open_nursery() as nursery:
        await nursery.start(started)
        task_status.started(Listening(listeners[0].socket.getsockname()[1]))
