"""The webapp's persistent links to the admin servers: one WebSocket connection to each,
instead of an HTTP request per notify.

Why the ``websockets`` library: the webapp is asyncio (uvicorn), and trio-websocket, which
every trio service uses, does not run on asyncio. ``websockets`` is the maintained asyncio
implementation (RFC 6455, its own framing and ping/pong, no dependencies); the admin serves
the link with trio-websocket as every other internal link.

Frames (cluster/wire.py): after a ``hello`` carrying the cluster secret, the webapp sends
``notify`` frames, each with one or more notifies ``{"id":N,"events":[...]}``; the admin
answers with ``notified`` frames whose items are ``{"id":N,"ok":true,"behind":[S,...]}`` or
``{"id":N,"ok":false,"error":E}``. Notifies are pipelined: each waits on its own id, and
every notify queued while a frame is being written goes out together in the next frame, so
under load a frame carries many notifies. A lost connection fails the notifies waiting on
it (the caller tries another admin, then the outbox's retry queue) and reconnects with
jittered backoff. Events are encoded once, with orjson.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from prometheus_client import Counter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from webapp.store.streams import Posted

log = logging.getLogger(__name__)

FRAMES = Counter("backchannel_webapp_admin_link_frames_total", "Frames sent on admin links")
NOTIFIES = Counter("backchannel_webapp_admin_link_notifies_total",
                   "Notifies sent on admin links", ["outcome"])
SENT = NOTIFIES.labels("sent")
CONNECTS = Counter("backchannel_webapp_admin_link_connects_total", "Admin link connects",
                   ["outcome"])
PIECE_BYTES = 1 << 20  # encoded events per notify: a large batch goes as several notifies
FRAME_BYTES = 4 << 20  # notifies per frame, by size (the admin takes up to 16 MiB)
MAX_FRAME = 16 << 20
CONNECT_WAIT_S = 0.5  # a notify waits this long for some link to come up
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0
LINK_ERRORS = (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError)

OnBehind = Callable[[list[str]], None]


class LinkDown(Exception):
    """The link closed (or was never up) before the admin answered."""


def dumps(value: Any) -> bytes:
    """orjson, or json for what orjson refuses (integers past 64 bits in a client's blocks,
    lone surrogates): the same JSON value either way."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


def encode_events(posted: Sequence[Posted]) -> list[bytes]:
    return [dumps({"stream": p.stream, "seq": p.seq, "event": p.event}) for p in posted]


def pieces(items: list[bytes], budget: int = PIECE_BYTES) -> list[list[bytes]]:
    """Consecutive runs of at most ``budget`` bytes (at least one item each)."""
    runs: list[list[bytes]] = [[]]
    size = 0
    for item in items:
        if runs[-1] and size + len(item) > budget:
            runs.append([])
            size = 0
        runs[-1].append(item)
        size += len(item) + 1
    return runs if runs[-1] else []


class AdminLink:
    """One connection to one admin server, kept open by ``run``."""

    def __init__(self, name: str, url: str, hello: bytes, on_behind: OnBehind) -> None:
        self.name = name
        self.url = url
        self._hello = hello
        self._on_behind = on_behind
        self._ids = itertools.count(1)
        self._queue: deque[bytes] = deque()
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._wake = asyncio.Event()
        self.up = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        backoff = BACKOFF_BASE_S
        loop = asyncio.get_running_loop()
        while True:
            since = loop.time()
            try:
                async with connect(self.url, compression=None, proxy=None, open_timeout=2,
                                   max_size=MAX_FRAME, close_timeout=1) as ws:
                    await ws.send(self._hello)
                    CONNECTS.labels("up").inc()
                    log.info("admin link %s up", self.name)
                    await self._serve(ws)
            except LINK_ERRORS as exc:
                CONNECTS.labels("down").inc()
                log.warning("admin link %s down: %s", self.name, type(exc).__name__)
            except Exception:  # noqa: BLE001 - a bug must not end the link for good
                log.exception("admin link %s failed", self.name)
            finally:
                self.up.clear()
                self._fail_all()
            # a link that lasted starts over; one refused at once (a wrong secret) backs off
            if loop.time() - since > BACKOFF_CAP_S:
                backoff = BACKOFF_BASE_S
            # jittered: the webapps of a cluster do not all knock on a restarted admin at once
            await asyncio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, BACKOFF_CAP_S)

    async def _serve(self, ws: ClientConnection) -> None:
        """Until the connection ends: a writer and a reader; the first to stop stops both."""
        self._queue.clear()  # left by a dead connection: their callers were failed
        tasks = {asyncio.create_task(self._writer(ws)), asyncio.create_task(self._reader(ws))}
        self.up.set()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # its error, if it failed
        finally:
            for task in tasks:
                task.cancel()

    async def _reader(self, ws: ClientConnection) -> None:
        async for raw in ws:
            self._answered(raw)

    async def _writer(self, ws: ClientConnection) -> None:
        """Everything queued goes out together, in frames of at most FRAME_BYTES."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, size = [], 0
                while self._queue and (not batch or size + len(self._queue[0]) <= FRAME_BYTES):
                    item = self._queue.popleft()
                    batch.append(item)
                    size += len(item) + 1
                await ws.send(b'{"type":"notify","items":[%b]}' % b",".join(batch))
                FRAMES.inc()
                SENT.inc(len(batch))

    def _answered(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
            items = frame["items"] if frame.get("type") == "notified" else []
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("admin link %s: bad frame", self.name)
            return
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, dict):
                continue
            behind = item.get("behind")
            if isinstance(behind, list) and behind:
                self._on_behind([s for s in behind if isinstance(s, str)])
            waiter = self._waiting.pop(item.get("id"), None)  # type: ignore[arg-type]
            if waiter is not None and not waiter.done():
                waiter.set_result(item)

    def _fail_all(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_exception(LinkDown(self.name))

    async def notify(self, events: list[bytes]) -> dict[str, Any]:
        """Send one notify and wait for its answer; raises LinkDown."""
        if not self.up.is_set():
            raise LinkDown(self.name)
        notify_id = next(self._ids)
        waiter = self._waiting[notify_id] = asyncio.get_running_loop().create_future()
        self._queue.append(b'{"id":%d,"events":[%b]}' % (notify_id, b",".join(events)))
        self._wake.set()
        try:
            return await waiter
        finally:
            self._waiting.pop(notify_id, None)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


class AdminLinks:
    """A link to every admin server the registry lists with a link address."""

    def __init__(self, secret: str, name: str,
                 discover: Callable[[], Awaitable[dict[str, str]]], on_behind: OnBehind,
                 attempts: int) -> None:
        self._hello = orjson.dumps({"type": "hello", "role": "webapp", "name": name,
                                    "secret": secret})
        self._discover = discover
        self._on_behind = on_behind
        self._attempts = attempts
        self.links: dict[str, AdminLink] = {}

    async def sync(self) -> None:
        """Open links to admins that appeared, close those to admins that left."""
        found = await self._discover()
        for name in list(self.links):
            if found.get(name) != self.links[name].url:
                self.links.pop(name).close()
        for name, url in found.items():
            if name not in self.links:
                link = self.links[name] = AdminLink(name, url, self._hello, self._on_behind)
                link.task = asyncio.create_task(link.run())

    async def run(self, interval_s: float = 1.0) -> None:
        while True:
            try:
                await self.sync()
            except Exception:  # noqa: BLE001 - discovery fails while Redis is away
                log.warning("admin discovery failed", exc_info=True)
            await asyncio.sleep(interval_s)

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        self.links.clear()

    async def _pick(self) -> AdminLink | None:
        up = [link for link in self.links.values() if link.up.is_set()]
        if up:
            return random.choice(up)
        if not self.links:
            await self.sync()
        waits = [asyncio.ensure_future(link.up.wait()) for link in self.links.values()]
        if not waits:
            return None
        done, rest = await asyncio.wait(waits, timeout=CONNECT_WAIT_S,
                                        return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        up = [link for link in self.links.values() if link.up.is_set()]
        return random.choice(up) if up else None

    async def send(self, posted: Sequence[Posted]) -> bool:
        """Notify one admin of ``posted``, trying others on failure; True once answered ok."""
        runs = pieces(encode_events(posted))
        delay = BACKOFF_BASE_S
        for attempt in range(self._attempts):
            link = await self._pick()
            if link is not None:
                try:
                    answers = [await link.notify(runs[0])] if len(runs) == 1 else \
                        await asyncio.gather(*(link.notify(run) for run in runs))
                except LinkDown:
                    NOTIFIES.labels("link_down").inc()
                else:
                    if all(a.get("ok") is True for a in answers):
                        return True
                    NOTIFIES.labels("refused").inc()
                    log.warning("admin %s refused a notify attempt=%d", link.name, attempt)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        log.error("admin notify gave up events=%d", len(posted))
        return False
