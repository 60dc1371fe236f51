"""Draining a gateway (`backchannel gateway drain`): leave discovery, refuse new clients, say
`goodbye` to the connected ones spread over a window so that they do not all reconnect at
once, then let the process end.

The gateway is used through what any per-client code sees (``clients``, ``Client.kick``):
closing a client is the same path as any other kick, so each gets ``goodbye`` and a close."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cluster import wire
from cluster.settings import Settings

log = logging.getLogger(__name__)

MAX_WINDOW_S = 600.0
REASON = "draining"
REFUSED = b'{"ok":false,"error":"gateway_draining"}'
SWEEP_S = 0.05
ANSWER_S = 1.0  # how long the exit waits for the /drain answer to be sent


class Kickable(Protocol):
    def kick(self, reason: str) -> None: ...


class Clients(Protocol):
    clients: set[Any]


class Drain:
    """One gateway's drain: requested once over HTTP, then run to the end by ``run``."""

    def __init__(self, settings: Settings, gateway: Clients) -> None:
        self.settings = settings
        self.gateway = gateway
        # main() holds its registry lease inside this scope; cancelling it stops renewal
        # and deletes the entry (service.announce unregisters on the way out)
        self.lease = trio.CancelScope()
        self.lease_released = trio.Event()
        # the client listener runs inside this scope: cancelled, it closes, so that a client
        # with a stale URL is refused at once instead of waiting in the accept backlog
        self.listener = trio.CancelScope()
        self.requested = trio.Event()
        self.answered = trio.Event()
        self.window_s = 0.0
        self.clients_at_start = 0
        self.handlers = 0  # clients past their upgrade request, not yet closed

    @property
    def draining(self) -> bool:
        return self.requested.is_set()

    def status(self) -> dict[str, Any]:
        return {"draining": self.draining,
                "drain_window_s": self.window_s if self.draining else None}

    def routes(self) -> list[Route]:
        return [Route("/drain", self.endpoint, methods=["POST"])]

    async def listen(self, serve: Callable[..., Awaitable[Any]], *,
                     task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Run ``serve`` (gateway_server.sockets.serve, whose handlers live in another
        nursery) until the drain begins."""
        with self.listener:
            await serve(task_status=task_status)

    async def endpoint(self, request: Request) -> Response:
        """``POST /drain {"window_s": W}``; answers once this gateway is out of discovery,
        so that every ``rtm.connect`` after the answer hands out other gateways."""
        if not wire.secret_matches(request.headers.get("x-backchannel-internal"),
                                   self.settings.internal_secret):
            return JSONResponse({"ok": False, "error": "not_allowed"}, status_code=403)
        window = parse_window(await request.body(), self.settings.gateway_drain_window_s)
        if window is None:
            return JSONResponse({"ok": False, "error": "invalid_arguments"}, status_code=400)
        if self.draining:
            return JSONResponse({"ok": True, "clients": len(self.gateway.clients),
                                 "window_s": self.window_s, "already_draining": True})
        self.window_s, self.clients_at_start = window, len(self.gateway.clients)
        self.requested.set()
        with trio.move_on_after(self.settings.shutdown_grace_s + 1):
            await self.lease_released.wait()
        # a drain of no clients is over at once: the exit waits until this answer is out
        return JSONResponse({"ok": True, "clients": self.clients_at_start,
                             "window_s": window, "already_draining": False},
                            background=BackgroundTask(self._sent))

    async def _sent(self) -> None:
        self.answered.set()  # async: starlette runs a sync background task in a thread

    async def run(self, stop: trio.CancelScope) -> None:
        """Waits for a drain request, carries it out, then cancels ``stop`` (main's nursery)
        so that the process exits."""
        await self.requested.wait()
        started = trio.current_time()
        log.info("draining: %d clients over %.1fs", self.clients_at_start, self.window_s)
        self.lease.cancel()
        self.listener.cancel()
        await self.lease_released.wait()
        await self._spread_kicks(list(self.gateway.clients))
        # after the window only stragglers are left (handshakes that were under way when the
        # drain began); what is still open at the deadline is closed as on SIGTERM
        with trio.move_on_after(self.settings.shutdown_grace_s):
            await self._sweep()
        log.info("drained in %.1fs (%d handlers left); stopping",
                 trio.current_time() - started, self.handlers)
        with trio.move_on_after(ANSWER_S):
            await self.answered.wait()
        stop.cancel()

    async def _spread_kicks(self, clients: list[Kickable]) -> None:
        start = trio.current_time()
        step = self.window_s / len(clients) if clients else 0.0
        for i, client in enumerate(clients):
            await trio.sleep_until(start + i * step)
            client.kick(REASON)

    async def _sweep(self) -> None:
        while self.handlers:
            for client in list(self.gateway.clients):
                client.kick(REASON)
            await trio.sleep(SWEEP_S)


def parse_window(body: bytes, default: float) -> float | None:
    """The drain window from a JSON object body (``window_s`` absent: ``default``); None
    unless it is a finite number of seconds in [0, MAX_WINDOW_S]."""
    try:
        doc = json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    window = doc.get("window_s", default)
    if isinstance(window, bool) or not isinstance(window, int | float):
        return None
    if not math.isfinite(window) or not 0 <= window <= MAX_WINDOW_S:
        return None
    return float(window)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
