"""Timeouts uvicorn lacks: a deadline on request headers and one on the request body.

uvicorn (0.54, h11) closes an idle keep-alive connection after ``timeout_keep_alive``, but
cancels that timer on the first byte of a request and then waits for the rest of the headers
and the body forever, and it arms nothing on a new connection. A client that sends one
header byte a second (slowloris), or connects and says nothing, holds a socket for good.
docs/architecture.md ("Webapp timeouts") has the whole picture.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

# debug, not info: a client can provoke these as often as it likes
log = logging.getLogger(__name__)

_TIMED_OUT_BODY = b'{"ok":false,"error":"request_timeout"}'


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus a timer from a request's first byte (or a connection's
    accept) that closes the connection unless the request's headers are complete by then.

    h11's ``their_state`` is IDLE exactly while the client owes us request headers: it
    leaves IDLE when the request line and headers have parsed, and returns to IDLE when the
    next request may start. Bytes that trickle in do not restart the timer.
    """

    header_timeout_s = 10.0  # set per server by header_deadline_protocol()
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()  # a connection that never sends a byte is cut off too

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # no-op while armed: the deadline is not extended
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s,
                                                      self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.debug("closing %s: no complete request headers in %.1f s",
                     self.client, self.header_timeout_s)
            self.transport.close()


def header_deadline_protocol(timeout_s: float) -> type[H11Protocol]:
    """The protocol class to hand to ``uvicorn.Config(http=...)``, with this deadline."""
    class Protocol(HeaderDeadlineProtocol):
        header_timeout_s = timeout_s

    return Protocol


class BodyDeadline:
    """ASGI middleware: the request body must have arrived ``timeout_s`` after the headers.

    The app is cancelled only while it waits in ``receive`` for body bytes, past the
    deadline; it then never ran a handler past reading its input, and the client gets a 408
    and a closed connection. Time the app spends on its own work never counts.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        body_done = False
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        window = asyncio.timeout(None)

        async def receive_timed() -> Message:
            nonlocal body_done
            if body_done:  # e.g. a streaming response listening for a disconnect
                return await receive()
            window.reschedule(deadline)
            message = await receive()
            window.reschedule(None)
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        try:
            async with window:
                await self.app(scope, receive_timed, send_tracked)
        except TimeoutError:
            if not window.expired() or started:
                raise
            await _request_timeout(scope, send)


async def _request_timeout(scope: Scope, send: Send) -> None:
    log.debug("closing %s: request body not complete in time", scope.get("client"))
    headers: list[tuple[bytes, Any]] = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(_TIMED_OUT_BODY)).encode()),
        (b"connection", b"close"),  # the rest of the body may still be on its way
    ]
    await send({"type": "http.response.start", "status": 408, "headers": headers})
    await send({"type": "http.response.body", "body": _TIMED_OUT_BODY})
