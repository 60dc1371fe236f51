"""Socket buffers of the channel server -> gateway links, kept small on purpose.

When a gateway falls behind, its channel server's `events` frames wait somewhere. With the
kernel's autotuned buffers (megabytes each way) they wait in the sockets, as thousands of
small frames the gateway then handles one by one, and the channel server never sees a
backlog to push back on. With small buffers they wait in the channel server's queue for
that gateway, where the sender joins them into frames of up to 256 events (which the gateway
writes to each client in one go) and where pushback can see them
(docs/performance.md, "Coalescing under load").

Both ends are set: the channel server's listening socket (accepted sockets inherit
SO_SNDBUF) and the gateway's socket before it connects (SO_RCVBUF set after the handshake
would not shrink the window already offered). trio-websocket takes both kinds of socket
through its public API (``WebSocketServer`` over our listeners, ``wrap_client_stream``).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

LINK_BUFFER_BYTES = 32_768


async def listeners(host: str, port: int, sndbuf: int = LINK_BUFFER_BYTES,
                    ) -> list[trio.SocketListener]:
    found = await trio.open_tcp_listeners(port, host=host)
    for listener in found:
        listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return found


@contextlib.asynccontextmanager
async def open_link(url: str, *, connect_timeout: float, rcvbuf: int = LINK_BUFFER_BYTES,
                    **options: Any) -> AsyncIterator[WebSocketConnection]:
    """Like trio-websocket's ``open_websocket_url`` for a ``ws://`` URL, with the socket's
    receive buffer set before it connects."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    resource = parts.path or "/"
    with trio.fail_after(connect_timeout):
        stream = await _connect(host, port, rcvbuf)
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(connect_timeout):
                ws = await wrap_client_stream(nursery, stream, host, resource, **options)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        try:
            yield ws
        finally:
            with trio.move_on_after(connect_timeout, shield=True):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def _connect(host: str, port: int, rcvbuf: int) -> trio.SocketStream:
    family, kind, proto, _, addr = (await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM))[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(addr)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)
