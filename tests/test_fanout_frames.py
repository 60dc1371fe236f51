"""The gateway's output path seen from the wire (docs/rtm.md, issue 8): every frame a client
gets is one valid, unmasked text frame of JSON whatever its length, and a burst of events
reaches every socket of every member exactly once, in seq order, on one or two gateways.

The frame checks read the TCP stream with wsproto (which refuses masked server frames,
reserved bits, invalid UTF-8 and lengths not in their shortest form) and compare the bytes
with the frames wsproto builds for the same payloads."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, Request, TextMessage
from wsproto.frame_protocol import FrameProtocol

from tests.conftest import Cluster, rtm_session

SMALL_MAX = 125  # the longest payload with a 7-bit length
MEDIUM_MAX = 65_535  # the longest with a 16-bit one; longer ones take 64 bits
MAX_TEXT_CHARS = 40_000  # chat.postMessage's limit
PAD = "é" * 250


class RawSocket:
    """An RTM client that reads the TCP stream itself: every byte the gateway sends is kept
    and parsed by wsproto, and each complete message is collected in arrival order."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.raw = bytearray()
        self.messages: list[str] = []
        self.taken = 0  # messages handed out by next()
        self.hello_positions: dict[str, int] = {}
        self._parts: list[str] = []

    async def handshake(self, url: str) -> None:
        parts = urlsplit(url)
        await self.stream.send_all(self.conn.send(Request(
            host=parts.netloc, target=f"{parts.path}?{parts.query}")))
        while not await self._pump():
            pass

    async def send(self, frame: dict[str, Any]) -> None:
        await self.stream.send_all(self.conn.send(Message(data=json.dumps(frame))))

    async def next(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next complete message, as JSON."""
        with trio.fail_after(timeout):
            while len(self.messages) == self.taken:
                await self._pump()
        self.taken += 1
        return json.loads(self.messages[self.taken - 1])

    def last_size(self) -> int:
        """Bytes of the payload next() returned last."""
        return len(self.messages[self.taken - 1].encode())

    async def until(self, match: dict[str, Any]) -> dict[str, Any]:
        while True:
            event = await self.next()
            if all(event.get(k) == v for k, v in match.items()):
                return event

    async def _pump(self) -> bool:
        """Read once and parse; True when the handshake's answer has arrived."""
        data = await self.stream.receive_some(1 << 16)
        assert data, "the gateway closed the connection"
        self.raw += data
        self.conn.receive_data(data)
        accepted = False
        for event in self.conn.events():
            if isinstance(event, AcceptConnection):
                accepted = True
            elif isinstance(event, TextMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    self.messages.append("".join(self._parts))
                    self._parts = []
            else:  # a parse failure shows as CloseConnection with wsproto's reason
                raise AssertionError(f"unexpected from the gateway: {event!r}")
        return accepted

    def frame_bytes(self) -> bytes:
        """What came after the HTTP handshake's answer."""
        return bytes(self.raw[self.raw.index(b"\r\n\r\n") + 4:])


@asynccontextmanager
async def raw_socket(cluster: Cluster, token: str, gateway: str | None = None,
                     rcvbuf: int | None = None) -> AsyncIterator[RawSocket]:
    """rtm.connect, then a raw socket (on ``gateway`` if given; with a small receive buffer
    if ``rcvbuf``, so that what it does not read stays in the gateway), read to hello."""
    async with httpx.AsyncClient(timeout=10) as http:
        reply = (await http.post(cluster.api + "rtm.connect",
                                 headers={"Authorization": f"Bearer {token}"})).json()
    assert reply["ok"], reply
    url = urlsplit(reply["url"])
    if gateway is not None:
        url = url._replace(netloc=urlsplit(gateway).netloc)
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
    await sock.connect((url.hostname, url.port))
    async with trio.SocketStream(sock) as stream:
        raw = RawSocket(stream)
        with trio.fail_after(10):
            await raw.handshake(url.geturl())
        hello = await raw.next()
        assert hello["type"] == "hello", hello
        raw.hello_positions = hello["positions"]
        yield raw


def as_built(messages: list[str]) -> list[bytes]:
    """Each message as one final, unmasked text frame, built by wsproto as a server would."""
    server = FrameProtocol(client=False, extensions=[])
    return [bytes(server.send_data(m, fin=True)) for m in messages]


def check_wire(sock: RawSocket) -> None:
    """Every message is a JSON object, and the stream is exactly one whole frame per message
    (a partial last one may follow)."""
    assert all(isinstance(json.loads(m), dict) for m in sock.messages)
    wire, at = sock.frame_bytes(), 0
    for i, frame in enumerate(as_built(sock.messages)):
        got = wire[at:at + len(frame)]
        assert got == frame, (f"message {i} ({len(sock.messages[i].encode())} bytes): "
                              f"header {got[:10].hex()} != {frame[:10].hex()}")
        at += len(frame)


def filler(size: int) -> str:
    """Text of exactly ``size`` UTF-8 bytes mixing 1-, 2- and 4-byte characters, within
    chat.postMessage's character limit."""
    fours = min(max(size - 400, 0) // 4, MAX_TEXT_CHARS - 300)
    twos = min((size - 4 * fours) // 2, 100)
    text = "😀" * fours + "é" * twos + "a" * (size - 4 * fours - 2 * twos)
    assert len(text.encode()) == size and len(text) <= MAX_TEXT_CHARS, size
    return text


async def post(http: httpx.AsyncClient, cluster: Cluster, token: str, channel: str,
               text: str) -> str:
    reply = (await http.post(cluster.api + "chat.postMessage", json={
        "channel": channel, "text": text}, headers={"Authorization": f"Bearer {token}"})).json()
    assert reply["ok"], reply
    return reply["ts"]


async def sized_message(sock: RawSocket, http: httpx.AsyncClient, cluster: Cluster,
                        token: str, channel: str, target: int) -> int:
    """Post until the message's RTM event is exactly ``target`` bytes (an event's fields
    around the text, such as its seq, may grow by a digit between tries)."""
    text_bytes = target - 200
    for _ in range(4):
        text = filler(text_bytes)
        ts = await post(http, cluster, token, channel, text)
        event = await sock.until({"type": "message", "ts": ts})
        assert event["text"] == text
        size = sock.last_size()
        if size == target:
            return size
        text_bytes -= size - target
    raise AssertionError(f"no event of exactly {target} bytes")


async def sized_pong(sock: RawSocket, target: int) -> int:
    """Ping until the pong is exactly ``target`` bytes (the gateway echoes ``time``)."""
    pad = target - 40
    for attempt in range(4):
        await sock.send({"type": "ping", "id": attempt, "time": "p" * pad})
        await sock.until({"type": "pong", "reply_to": attempt})
        size = sock.last_size()
        if size == target:
            return size
        pad -= size - target
    raise AssertionError(f"no pong of exactly {target} bytes")


async def test_every_frame_is_one_unmasked_text_frame_at_every_length(cluster: Cluster):
    ws = cluster.seed(2)
    general = ws["channels"][0]["id"]
    poster, reader = ws["users"]
    async with raw_socket(cluster, reader["token"]) as sock, rtm_session(
        cluster, poster["token"]
    ) as typist, httpx.AsyncClient(timeout=30) as http:
        # a fanned-out event under 126 bytes: no message event is that short
        await typist.send({"type": "typing", "channel": general})
        typing = await sock.until({"type": "user_typing", "channel": general})
        assert typing["user"] == poster["id"] and sock.last_size() <= SMALL_MAX
        sizes = [await sized_pong(sock, n) for n in (SMALL_MAX, SMALL_MAX + 1)]
        for target in (300, 4_000, MEDIUM_MAX, MEDIUM_MAX + 1, 100_000):
            sizes.append(await sized_message(sock, http, cluster, poster["token"], general,
                                             target))
        longest = filler(4 * (MAX_TEXT_CHARS - 300) + 200)
        ts = await post(http, cluster, poster["token"], general, longest)
        assert (await sock.until({"type": "message", "ts": ts}))["text"] == longest
    check_wire(sock)
    assert sizes[:2] == [SMALL_MAX, SMALL_MAX + 1]
    assert MEDIUM_MAX in sizes and MEDIUM_MAX + 1 in sizes
    assert len(sock.messages[-1].encode()) > 150_000


# --- a burst to many sockets ----------------------------------------------------------------

async def call(http: httpx.AsyncClient, cluster: Cluster, token: str, method: str,
               **args: Any) -> dict[str, Any]:
    reply = (await http.post(cluster.api + method, json=args,
                             headers={"Authorization": f"Bearer {token}"})).json()
    assert reply["ok"], reply
    return reply


class Reader:
    """One RTM socket's events, read until it has ``expected`` messages; once ``hold`` is
    set, if given (meanwhile the gateway keeps what the socket does not take)."""

    def __init__(self, session: Any, expected: int, hold: trio.Event | None = None) -> None:
        self.session = session
        self.expected = expected
        self.hold = hold
        self.events: list[dict[str, Any]] = []

    async def run(self) -> None:
        if self.hold is not None:
            await self.hold.wait()
        messages = 0
        with trio.fail_after(60):
            while messages < self.expected:
                self.events.append(await self.session.next(timeout=60))
                messages += self.events[-1].get("type") == "message"

    def on(self, stream: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("stream") == stream]


async def burst(http: httpx.AsyncClient, cluster: Cluster, token: str,
                posts: list[tuple[str, str]], in_flight: int = 16) -> None:
    """All ``posts`` (channel, text), ``in_flight`` at a time."""
    limit = trio.CapacityLimiter(in_flight)

    async def one(channel: str, text: str) -> None:
        async with limit:
            await post(http, cluster, token, channel, text)

    async with trio.open_nursery() as nursery:
        for channel, text in posts:
            nursery.start_soon(one, channel, text)


def check_streams(readers: list[Reader], posted: dict[str, list[str]]) -> None:
    """Per socket and stream: the seqs after hello's position, each once, in order; every
    text posted there and nothing from a stream the socket is not in. And every socket
    saw the same text at the same seq."""
    at_seq: dict[tuple[str, int], str] = {}
    for reader in readers:
        start = reader.session.hello_positions
        foreign = {e.get("stream") for e in reader.events if "stream" in e} - set(start)
        assert not foreign, foreign
        for stream, texts in posted.items():
            got = reader.on(stream)
            if stream not in start:
                continue
            assert [e["seq"] for e in got] == list(range(start[stream] + 1,
                                                         start[stream] + 1 + len(got)))
            assert sorted(e["text"] for e in got if e["type"] == "message") == sorted(texts)
            for e in got:
                assert at_seq.setdefault((stream, e["seq"]), e.get("text")) == e.get("text")


@pytest.mark.parametrize("gateways", [1, 2], ids=["one_gateway", "two_gateways"])
async def test_a_burst_reaches_every_socket_once_and_in_order(cluster: Cluster, gateways: int):
    ws = cluster.seed(8)
    users = ws["users"]
    boss, general = users[0], ws["channels"][0]["id"]
    async with httpx.AsyncClient(timeout=30) as http:
        side = (await call(http, cluster, boss["token"], "conversations.create",
                           name="side"))["channel"]["id"]
        await call(http, cluster, boss["token"], "conversations.invite", channel=side,
                   users=",".join(u["id"] for u in users[5:]))
        dm = (await call(http, cluster, boss["token"], "conversations.open",
                         users=users[1]["id"]))["channel"]["id"]
        # ~700-byte events: what a paused socket does not take piles up in its gateway
        posted = {channel: [f"{channel} {i} {PAD}" for i in range(n)]
                  for channel, n in ((general, 240), (side, 120), (dm, 40))}
        urls = [p["url"] for p in cluster.processes("gateway_server")][:gateways]
        # the second socket of users[1], and users[2]'s, read only after the burst, through
        # small receive buffers: theirs go out of the gateway's buffer in coalesced writes
        # (under the shared cluster's client_slow_bytes: #general's and the DM's ~200 KB)
        sockets = [(u, False) for u in users] + [(users[1], True)]
        sockets[2] = (users[2], True)
        paused = trio.Event()
        async with AsyncExitStack() as stack:
            readers = []
            for i, (user, pause) in enumerate(sockets):
                gateway = urls[i % len(urls)]
                session = await stack.enter_async_context(
                    raw_socket(cluster, user["token"], gateway, rcvbuf=4096) if pause
                    else rtm_session(cluster, user["token"], gateway))
                readers.append(Reader(session, sum(len(t) for c, t in posted.items()
                                                   if c in session.hello_positions),
                                      paused if pause else None))
            # interleaved, so that each stream's events share the links with the others'
            order = sorted(((c, t) for c, ts in posted.items() for t in ts),
                           key=lambda ct: int(ct[1].split()[1]))
            async with trio.open_nursery() as nursery:
                for reader in readers:
                    nursery.start_soon(reader.run)
                await burst(http, cluster, boss["token"], order)
                paused.set()
    assert {len(r.session.hello_positions) for r in readers} >= {3, 4, 5}
    check_streams(readers, posted)
    for reader in readers:
        if isinstance(reader.session, RawSocket):
            check_wire(reader.session)
