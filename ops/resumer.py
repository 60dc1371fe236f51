"""A resuming RTM client, written against the client contract in docs/rtm.md, used by the
fault tests and by `backchannel resume-bench`.

It keeps, per stream, the last ``seq`` it processed (from ``hello.positions``, then from
every event), sends them as ``resume`` to ``rtm.connect`` on every (re)connect, and
reconnects forever, with a short jittered backoff, after a close, a ``goodbye`` or a failed
connect. On the way it checks what the server promises: per stream every event is
``last + 1`` (a jump is *lost*, a seq already seen a *duplicate*, a late seq that filled an
earlier jump *reordered*), ``resume_failed`` frames are recorded, and a stream refused with
``no_access`` must never deliver anything (*leaked*). Message texts and ts are counted in a
``loadcheck.Member``, so a test can check them against every acked post.

**Resumed**, as the benchmark and tests measure it: a socket opened after the disconnect
got its ``hello``, and then a *live* message arrived on it, i.e. one whose ``ts`` (commit
time) is later than that ``hello``. Within a stream replay comes before live events, so by
then that stream has been replayed completely: the client has caught up. It needs posts
going on in a channel the client is in, and over-states the time by at most one post
interval.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from ops.loadcheck import Member

# rtm.connect errors a retry cannot fix: the caller's token or code is wrong
FATAL_ERRORS = {"not_authed", "invalid_auth", "account_inactive", "token_revoked",
                "invalid_arguments", "missing_scope"}
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0
MAX_HOLES = 100_000  # a jump wider than this is counted, not remembered seq by seq
MAX_ANOMALIES = 20
CONNECT_TIMEOUT_S = 10.0
HELLO_TIMEOUT_S = 30.0


class ResumeError(Exception):
    """rtm.connect refused for a reason retrying cannot fix."""


class _Retry(Exception):
    """This attempt failed; call rtm.connect again."""


@dataclasses.dataclass
class StreamCheck:
    """One stream's continuity as this client saw it across every socket."""

    start: int  # the position the client first learnt (hello)
    last: int  # the last seq processed: what the client resumes from
    received: int = 0
    duplicated: int = 0
    reordered: int = 0
    skipped: int = 0  # seqs the server announced it would not deliver (resume_failed)
    holes: set[int] = dataclasses.field(default_factory=set)
    far_lost: int = 0

    @property
    def lost(self) -> int:
        return len(self.holes) + self.far_lost

    def see(self, seq: int) -> str:
        """Judge the next event's seq: "" when it is the next one, else what it was."""
        self.received += 1
        if seq == self.last + 1:
            self.last = seq
            return ""
        if seq > self.last:
            self._gap(self.last + 1, seq)
            self.last = seq
            return "jump"
        if seq in self.holes:
            self.holes.discard(seq)
            self.reordered += 1
            return "reordered"
        self.duplicated += 1
        return "duplicated"

    def restart(self, position: int) -> bool:
        """A new socket starts after ``position`` (hello). Ahead of us: the seqs between
        are lost (unless a resume_failed explains them). Behind us: a replay of what we
        had, counted as duplicates when it arrives. True if it is where we were."""
        where = self.last
        if position > where:
            self._gap(where + 1, position + 1)
            self.last = position
        return position == where

    def skip_to(self, seq: int) -> None:
        """resume_failed with ``seq``: the stream goes on live after ``seq``; what we miss
        up to there was announced, so it is skipped rather than lost."""
        announced = {s for s in self.holes if s <= seq}
        self.holes -= announced
        self.skipped += len(announced) + max(0, seq - self.last)
        self.last = seq

    def _gap(self, lo: int, hi: int) -> None:
        if hi - lo > MAX_HOLES:
            self.far_lost += hi - lo
        else:
            self.holes.update(range(lo, hi))


@dataclasses.dataclass
class Session:
    """One attempt: rtm.connect, socket, hello, events, close. Times are time.monotonic()."""

    requested_at: float
    resumed_from: dict[str, int]
    gateway: str = ""
    url_at: float | None = None  # rtm.connect answered
    open_at: float | None = None  # WebSocket handshake done
    hello_at: float | None = None
    hello_wall: float | None = None  # time.time() at hello, compared with message ts
    live_at: float | None = None  # first message committed after hello: caught up
    live_ts: float | None = None  # that message's ts (its commit time, time.time())
    closed_at: float | None = None
    close: str = ""
    position_mismatch: int = 0  # hello positions that are not where we stood
    positions: dict[str, Any] = dataclasses.field(default_factory=dict)  # as hello said


class ResumingClient:
    """``await nursery.start(client.run)`` returns after the first ``hello``; cancel to
    stop; ``run`` again later to resume from where it stopped (state is kept)."""

    def __init__(self, api: str, token: str, *, http: httpx.AsyncClient | None = None,
                 prefix: str = "", pin: str | None = None,
                 resume: Mapping[str, Any] | None = None, keep_events: bool = False) -> None:
        self.api = api
        self.token = token
        self.http = http
        self.prefix = prefix  # message texts counted in `member` start with this
        # ws://host:port to connect to instead of where rtm.connect points, until a hello
        # comes from there (tests and benchmarks place clients on a chosen gateway)
        self.pin = pin
        self.first_resume = dict(resume) if resume is not None else None  # raw, for tests
        self.streams: dict[str, StreamCheck] = {}
        self.member = Member(token)
        self.resume_failed: list[dict[str, Any]] = []
        self.denied: set[str] = set()  # streams refused with no_access
        self.leaked: list[dict[str, Any]] = []  # events on a denied stream
        # the first few seqs that were not last + 1, with where they came: for bug reports
        self.anomalies: list[dict[str, Any]] = []
        self.sessions: list[Session] = []
        self.frames: list[dict[str, Any]] = []  # non-stream frames, for tests to inspect
        # every stream event in arrival order, when a test wants to look at them
        self.events: list[dict[str, Any]] | None = [] if keep_events else None
        self._ws: WebSocketConnection | None = None
        self._greeted = False  # a hello came once: from then on, resume from positions
        self._dropping = False

    # --- what a test or benchmark reads ---------------------------------------------------

    def positions(self) -> dict[str, int]:
        """What the next rtm.connect sends as ``resume``."""
        return {s: c.last for s, c in self.streams.items() if s not in self.denied}

    def resumed_after(self, t: float) -> Session | None:
        """The first session started after ``t`` that has caught up (see module doc)."""
        return next((s for s in self.sessions if s.requested_at >= t and s.live_at), None)

    def hello_after(self, t: float) -> Session | None:
        return next((s for s in self.sessions if s.requested_at >= t and s.hello_at), None)

    def counts(self) -> dict[str, int]:
        checks = self.streams.values()
        return {"received": sum(c.received for c in checks),
                "lost": sum(c.lost for c in checks),
                "duplicated": sum(c.duplicated for c in checks),
                "reordered": sum(c.reordered for c in checks),
                "skipped": sum(c.skipped for c in checks),
                "resume_failed": len(self.resume_failed), "leaked": len(self.leaked),
                "position_mismatch": sum(s.position_mismatch for s in self.sessions),
                "sessions": len(self.sessions)}

    def reset_counts(self) -> None:
        """Start a new measurement: forget what was counted (sessions included), keep
        the positions, so the next run resumes from where this one stopped."""
        self.streams = {s: StreamCheck(start=c.last, last=c.last)
                        for s, c in self.streams.items()}
        self.member = Member(self.token)
        self.resume_failed, self.leaked, self.anomalies = [], [], []
        self.sessions, self.frames = [], []
        if self.events is not None:
            self.events = []

    # --- the loop ------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if self.http is None:
            async with httpx.AsyncClient(timeout=httpx.Timeout(30, pool=None)) as http:
                self.http = http
                try:
                    await self._loop(task_status)
                finally:
                    self.http = None
        else:
            await self._loop(task_status)

    async def drop(self) -> None:
        """Lose the socket as a network failure would: close the TCP stream under the
        WebSocket, no close frame, no goodbye. The loop reconnects and resumes."""
        ws = self._ws
        if ws is not None:
            self._dropping = True
            # trio-websocket has no public abort; its reader sees the closed stream and
            # ends the connection (code 1006) as it would on a reset
            await ws._stream.aclose()

    async def _loop(self, task_status: Any) -> None:
        attempt = 0
        started = [False]

        def on_hello() -> None:
            if not started[0]:
                started[0] = True
                task_status.started()

        while True:
            session = Session(time.monotonic(), self.positions())
            self.sessions.append(session)
            try:
                await self._attempt(session, on_hello)
            except _Retry as exc:
                session.close = str(exc)
            finally:
                session.closed_at = time.monotonic()
                self._ws = None
            attempt = 1 if session.hello_at is not None else attempt + 1
            # full jitter: clients of one dead gateway do not all come back in one instant
            await trio.sleep(random.uniform(0, min(BACKOFF_CAP_S,
                                                   BACKOFF_BASE_S * 2 ** (attempt - 1))))

    async def _attempt(self, session: Session, on_hello: Callable[[], None]) -> None:
        self._dropping = False
        url = await self._rtm_connect(session)
        session.url_at = time.monotonic()
        session.gateway = urlsplit(url).netloc
        try:
            async with open_websocket_url(url, max_message_size=16 * 1024 * 1024,
                                          connect_timeout=CONNECT_TIMEOUT_S,
                                          disconnect_timeout=2) as ws:
                self._ws = ws
                session.open_at = time.monotonic()
                await self._read(ws, session, on_hello)
        except (HandshakeError, ConnectionClosed, OSError, trio.BrokenResourceError,
                trio.TooSlowError) as exc:
            raise _Retry("dropped" if self._dropping else f"{type(exc).__name__}") from exc

    async def _rtm_connect(self, session: Session) -> str:
        assert self.http is not None
        resume: Any = self.positions() if self.streams else None
        if not self._greeted and self.first_resume is not None:
            resume = self.first_resume
        body = {"resume": resume} if resume is not None else {}
        try:
            reply = await self.http.post(self.api + "rtm.connect", json=body,
                                         headers={"Authorization": f"Bearer {self.token}"})
            doc = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise _Retry(f"rtm.connect: {type(exc).__name__}") from exc
        if doc.get("ok"):
            url = str(doc["url"])
            if self.pin:
                url = urlunsplit(urlsplit(url)._replace(netloc=urlsplit(self.pin).netloc))
            return url
        error = str(doc.get("error"))
        if error in FATAL_ERRORS:
            raise ResumeError(f"rtm.connect: {error}")
        if error == "ratelimited":
            await trio.sleep(float(reply.headers.get("Retry-After", "1")))
        raise _Retry(f"rtm.connect: {error}")

    async def _read(self, ws: WebSocketConnection, session: Session,
                    on_hello: Callable[[], None]) -> None:
        with trio.fail_after(HELLO_TIMEOUT_S):
            hello = json.loads(await ws.get_message())
        if hello.get("type") != "hello":
            raise _Retry(f"first frame was {hello.get('type')!r}, not hello")
        self._on_hello(hello, session)
        on_hello()
        while True:
            event = json.loads(await ws.get_message())
            if event.get("type") == "goodbye":
                raise _Retry("goodbye")
            self._on_event(event, session)

    def _on_hello(self, hello: dict[str, Any], session: Session) -> None:
        session.hello_at = time.monotonic()
        session.hello_wall = time.time()
        self.pin = None
        self._greeted = True
        positions = hello.get("positions")
        if not isinstance(positions, dict):
            raise ResumeError(f"hello without positions: {hello}")
        session.positions = dict(positions)
        for stream, position in positions.items():
            if type(position) is not int:
                raise ResumeError(f"hello position {stream}: {position!r}")
            check = self.streams.get(stream)
            if check is None:
                self.streams[stream] = StreamCheck(start=position, last=position)
            elif not check.restart(position):
                session.position_mismatch += 1

    def _on_event(self, event: dict[str, Any], session: Session) -> None:
        kind = event.get("type")
        stream, seq = event.get("stream"), event.get("seq")
        if kind == "resume_failed":
            self._on_resume_failed(event)
            return
        if not isinstance(stream, str) or type(seq) is not int:
            self.frames.append(event)  # user_typing, pong, error: no position
            return
        if stream in self.denied:
            self.leaked.append(event)
            return
        check = self.streams.get(stream)
        if check is None:
            # a stream that starts on this socket (a channel joined now): from its first
            self.streams[stream] = check = StreamCheck(start=seq - 1, last=seq - 1)
        last = check.last
        verdict = check.see(seq)
        if verdict and len(self.anomalies) < MAX_ANOMALIES:
            self.anomalies.append({"what": verdict, "stream": stream, "seq": seq,
                                   "last": last, "session": len(self.sessions) - 1,
                                   "type": kind})
        if self.events is not None:
            self.events.append(event)
        if kind == "message":
            self.member.record(event, self.prefix)
            self._maybe_live(event, session)

    def _maybe_live(self, event: dict[str, Any], session: Session) -> None:
        if session.live_at is not None or session.hello_wall is None:
            return
        try:
            committed = float(event.get("ts", 0))
        except (TypeError, ValueError):
            return
        if committed >= session.hello_wall:
            session.live_at = time.monotonic()
            session.live_ts = committed

    def _on_resume_failed(self, event: dict[str, Any]) -> None:
        self.resume_failed.append(event)
        stream, seq = event.get("stream"), event.get("seq")
        if not isinstance(stream, str):
            return
        if event.get("reason") == "no_access":
            self.denied.add(stream)
            self.streams.pop(stream, None)
        elif type(seq) is int:
            check = self.streams.setdefault(stream, StreamCheck(start=seq, last=seq))
            check.skip_to(seq)


async def start_all(nursery: trio.Nursery, clients: list[ResumingClient],
                    concurrency: int = 50) -> None:
    """Start every client in ``nursery``, ``concurrency`` connecting at once (the webapp's
    Redis pool holds 100 connections); returns once each has had its first hello."""
    limit = trio.Semaphore(concurrency)

    async def one(client: ResumingClient) -> None:
        async with limit:
            await nursery.start(client.run)

    async with trio.open_nursery() as starting:
        for client in clients:
            starting.start_soon(one, client)


def totals(clients: list[ResumingClient]) -> dict[str, int]:
    """Sum of ``counts()`` over clients."""
    out: dict[str, int] = {}
    for c in clients:
        for k, v in c.counts().items():
            out[k] = out.get(k, 0) + v
    return out


def gateway_netloc(url: str) -> str:
    return urlsplit(url).netloc
