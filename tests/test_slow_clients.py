"""A client is slow only when its socket does not drain (docs/rtm.md, issue 8): one that
really stops reading is closed, after ``client_slow_after_s`` over ``client_slow_bytes`` or at
once over ``client_max_bytes``, while the others get everything; one that pauses and then
drains within the deadline keeps its connection and loses nothing.

The stalled clients are trio-websocket clients that never call ``get_message``: their reader
task stops reading the socket once its (zero-length) message queue is taken, and a small
SO_RCVBUF keeps the kernel from soaking up much on their side."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream
from wsproto.frame_protocol import FrameProtocol, Opcode

from gateway_server.client import Backlog, Client, Limits, text_frame
from ops import cluster as ops_cluster
from tests.conftest import Cluster, RtmSession, rtm_session, start_cluster, stop_cluster

SLOW_BYTES = 65_536
STALLED_RCVBUF = 4_096
TEXT = "😀" * 10_000  # a 40 KB event: a few fill the kernel's buffers and the slow bound
MAX_POSTS = 200  # the loops' bound: several times what any of them needs
SETTINGS = {
    # closed by the deadline: the cap is out of reach
    "deadline": {"client_slow_after_s": 1.0, "client_max_bytes": 1 << 30},
    # a pause well within the deadline
    "pause": {"client_slow_after_s": 60.0, "client_max_bytes": 1 << 30},
    # closed by the cap: the deadline is out of reach
    "cap": {"client_slow_after_s": 3600.0, "client_max_bytes": 200_000},
}


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Cluster]]:
    """One private cluster per entry of SETTINGS, started side by side."""
    counts = ops_cluster.Counts(channels=1, gateways=1)

    def start(name: str, run_dir: Path) -> Cluster:
        return start_cluster(run_dir, counts, client_slow_bytes=SLOW_BYTES, **SETTINGS[name])

    with ExitStack() as stack, ThreadPoolExecutor(len(SETTINGS)) as pool:
        futures = {name: pool.submit(start, name, tmp_path_factory.mktemp(name))
                   for name in SETTINGS}
        started: dict[str, Cluster] = {}
        for name, future in futures.items():
            if future.exception() is None:
                started[name] = future.result()
                stack.callback(stop_cluster, started[name])
        for future in futures.values():
            if future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        yield started


class Stalled:
    """A socket whose client read its hello and then stopped reading."""

    def __init__(self, ws: WebSocketConnection, hello: dict[str, Any]) -> None:
        self.ws = ws
        self.hello = hello
        self.frames: list[dict[str, Any]] = []

    async def read(self, messages: int | None = None) -> None:
        """Read again: until ``messages`` messages, or (None) until the server closes."""
        with trio.fail_after(30):
            try:
                while messages is None or len(self.messages()) < messages:
                    self.frames.append(json.loads(await self.ws.get_message()))
            except ConnectionClosed:
                if messages is not None:
                    raise

    def messages(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == "message"]


@asynccontextmanager
async def stalled_socket(cluster: Cluster, token: str) -> AsyncIterator[Stalled]:
    async with httpx.AsyncClient(timeout=10) as http:
        reply = (await http.post(cluster.api + "rtm.connect",
                                 headers={"Authorization": f"Bearer {token}"})).json()
    assert reply["ok"], reply
    url = urlsplit(reply["url"])
    sock = trio.socket.socket()
    # before connect, so the window the client offers stays small
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
    await sock.connect((url.hostname, url.port))
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, trio.SocketStream(sock), url.netloc,
                                      f"{url.path}?{url.query}", message_queue_size=0)
        try:
            with trio.fail_after(10):
                hello = json.loads(await ws.get_message())
            assert hello["type"] == "hello", hello
            yield Stalled(ws, hello)
        finally:
            nursery.cancel_scope.cancel()


async def kicked_too_slow(http: httpx.AsyncClient, cluster: Cluster) -> float:
    """The gateway's count of clients closed as too slow."""
    text = (await http.get(cluster.processes("gateway_server")[0]["http_url"] + "/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "backchannel_gateway_server_kicked_total"
                    and sample.labels.get("reason") == "too slow"):
                return sample.value
    return 0.0


async def unsent_bytes(http: httpx.AsyncClient, cluster: Cluster) -> int:
    """Bytes the gateway holds that its clients' sockets have not taken."""
    health = (await http.get(cluster.processes("gateway_server")[0]["http_url"] + "/health"))
    return int(health.json()["unsent_bytes"])


class Poster:
    """Posts to a channel, each one read by a healthy client before the next: fanout keeps
    going for the healthy one whatever the stalled one does."""

    def __init__(self, http: httpx.AsyncClient, cluster: Cluster, token: str, channel: str,
                 healthy: RtmSession) -> None:
        self.http, self.cluster, self.token, self.channel = http, cluster, token, channel
        self.healthy = healthy
        self.texts: list[str] = []

    async def post(self) -> None:
        if len(self.texts) >= MAX_POSTS:  # (not an assert: pytest would print every text)
            raise AssertionError(f"the stalled client was not closed after {MAX_POSTS} posts "
                                 f"of {len(TEXT.encode()):,} bytes")
        text = f"{len(self.texts)} {TEXT}"
        reply = (await self.http.post(self.cluster.api + "chat.postMessage", json={
            "channel": self.channel, "text": text},
            headers={"Authorization": f"Bearer {self.token}"})).json()
        assert reply["ok"], reply
        self.texts.append(text)
        await self.healthy.next({"type": "message", "ts": reply["ts"]})


def check_in_order(frames: list[dict[str, Any]], start: int, texts: list[str]) -> None:
    """The channel's messages in ``frames`` are ``texts``, from seq ``start`` + 1 on, with no
    gap: exactly once and in order."""
    got = [f for f in frames if f.get("type") == "message"]
    # by their numbers first: a diff of the 40 KB texts themselves would be unreadable
    assert [f["text"].split(" ", 1)[0] for f in got] == [t.split(" ", 1)[0] for t in texts]
    assert all(f["text"] == t for f, t in zip(got, texts, strict=True)), "a text changed"
    assert [f["seq"] for f in got] == list(range(start + 1, start + 1 + len(got)))


async def closed_while_others_go_on(c: Cluster) -> None:
    ws = c.seed(3)
    poster, stalled_user, healthy_user = ws["users"]
    general = ws["channels"][0]["id"]
    async with stalled_socket(c, stalled_user["token"]) as stalled, rtm_session(
        c, healthy_user["token"]
    ) as healthy, httpx.AsyncClient(timeout=30) as http:
        posts = Poster(http, c, poster["token"], general, healthy)
        while await kicked_too_slow(http, c) == 0:
            await posts.post()
        await stalled.read()  # ends: the gateway closed the connection
    check_in_order(healthy.seen, healthy.hello_positions[general], posts.texts)
    got = len(stalled.messages())
    assert got < len(posts.texts)
    check_in_order(stalled.frames, stalled.hello["positions"][general], posts.texts[:got])


async def test_a_client_that_stops_reading_is_closed_after_the_deadline(clusters):
    await closed_while_others_go_on(clusters["deadline"])


async def test_a_client_over_the_cap_is_closed_at_once(clusters):
    # the deadline is an hour away: only the cap can have closed it
    await closed_while_others_go_on(clusters["cap"])


async def test_a_client_that_pauses_then_drains_keeps_everything(clusters):
    c = clusters["pause"]
    ws = c.seed(3)
    poster, paused_user, healthy_user = ws["users"]
    general = ws["channels"][0]["id"]
    async with stalled_socket(c, paused_user["token"]) as paused, rtm_session(
        c, healthy_user["token"]
    ) as healthy, httpx.AsyncClient(timeout=30) as http:
        posts = Poster(http, c, poster["token"], general, healthy)
        # the paused socket really is behind: the gateway holds more than the slow bound
        while await unsent_bytes(http, c) <= SLOW_BYTES:
            await posts.post()
        await paused.read(len(posts.texts))
        await posts.post()  # still connected, and live again
        await paused.read(len(posts.texts))
        assert await kicked_too_slow(http, c) == 0
    check_in_order(paused.frames, paused.hello["positions"][general], posts.texts)
    check_in_order(healthy.seen, healthy.hello_positions[general], posts.texts)


# --- the output path's slow-client rules, in-process (gateway_server/client.py) -------------
# A Client over a socket pair with small buffers, on trio's autojump clock: the deadline and
# the cap, whatever the order of pushes, pauses and reads.

UNIT = Limits(slow_bytes=50_000, slow_after_s=2.0, max_bytes=400_000)
SMALL_BUF = 4_096


def output_client(nursery: trio.Nursery, limits: Limits, backlog: Backlog
                  ) -> tuple[Client, trio.SocketStream]:
    ours, theirs = trio.socket.socketpair()
    for s in (ours, theirs):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
    client = Client(trio.SocketStream(ours), None, "U1", "T1", limits, nursery.start_soon,
                    backlog)
    client.ready = True
    return client, trio.SocketStream(theirs)


async def test_a_flush_that_was_waiting_before_the_client_turned_slow_closes_it(
        autojump_clock):
    """The flush task is already waiting on the socket (under slow_bytes, so without a
    deadline) when more arrives and the client goes over: the deadline still applies."""
    backlog = Backlog(1 << 30)
    async with trio.open_nursery() as nursery:
        client, _peer = output_client(nursery, UNIT, backlog)  # the peer never reads
        while client.unsent == 0:
            client.push("a" * 1_000)
        await trio.testing.wait_all_tasks_blocked()  # the flush task waits in send_all
        while client.unsent <= UNIT.slow_bytes:
            client.push("b" * 1_000)
        await trio.sleep(UNIT.slow_after_s * 3)
        assert client.kick_reason == "too slow"
        assert client.unsent == 0 and backlog.bytes == 0
        nursery.cancel_scope.cancel()


class Model:
    """What a peer may see, and when the client may or must be closed."""

    def __init__(self, client: Client, peer: trio.SocketStream, backlog: Backlog) -> None:
        self.client, self.peer, self.backlog = client, peer, backlog
        self.pushed: list[str] = []
        self.parser = FrameProtocol(client=True, extensions=[])
        self.got: list[str] = []
        self.part = ""
        self.capped = False  # some push may have taken it over max_bytes
        self.calm_at = trio.current_time()  # last seen at or under slow_bytes
        self.over_since: float | None = None  # seen over slow_bytes since then

    def push(self, size: int) -> None:
        payload = f"{len(self.pushed)} " + "x" * size
        if self.client.unsent + len(text_frame(payload)) > self.client._limits.max_bytes:
            self.capped = True
        self.pushed.append(payload)
        self.client.push(payload)

    async def read(self, size: int) -> None:
        with trio.move_on_after(0.01):
            data = await self.peer.receive_some(size)
            self.parser.receive_bytes(data)
            for frame in self.parser.received_frames():  # a frame may come in parts
                assert frame.opcode in (Opcode.TEXT, Opcode.CONTINUATION), frame
                self.part += frame.payload
                if frame.message_finished:
                    self.got.append(self.part)
                    self.part = ""

    def check(self) -> None:
        c, now = self.client, trio.current_time()
        assert self.got == self.pushed[:len(self.got)]  # each once, in order
        assert c.unsent == self.backlog.bytes
        if c.kicked:
            assert c.kick_reason == "too slow"
            assert c.unsent == 0
            # closed no earlier than the rules allow
            assert self.capped or now - self.calm_at >= UNIT.slow_after_s
            return
        if c.unsent <= UNIT.slow_bytes:
            self.calm_at, self.over_since = now, None
            return
        if self.over_since is None:
            self.over_since = now
        # ...and no later: over slow_bytes for longer than slow_after_s means closed
        assert now - self.over_since <= UNIT.slow_after_s + 0.1, "slow client never closed"


_PUSH = st.tuples(st.just("push"), st.integers(1, 30_000))
_WAIT = st.tuples(st.just("wait"), st.integers(1, 30))  # tenths of a second
_READ = st.tuples(st.just("read"), st.integers(1, 100_000))
# reads are the rarer step, so that runs of pushes and pauses go over the limits
STEPS = st.lists(st.one_of(_PUSH, _WAIT, _PUSH, _WAIT, _READ), max_size=40)


# one autojump clock for all examples: it only ever moves time forward
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(STEPS)
# the flush task waits on the socket before the client goes over slow_bytes, then a pause
@example(steps=[("push", 20_000)] * 3 + [("wait", 30)])
async def test_the_deadline_and_the_cap_hold_whatever_the_order(autojump_clock, steps):
    backlog = Backlog(1 << 30)
    async with trio.open_nursery() as nursery:
        client, peer = output_client(nursery, UNIT, backlog)
        model = Model(client, peer, backlog)
        for op, n in steps:
            if op == "push":
                model.push(n)
            elif op == "wait":
                await trio.sleep(n / 10)
            else:
                await model.read(n)
            await trio.testing.wait_all_tasks_blocked()
            model.check()
        while not client.kicked and len(model.got) < len(model.pushed):
            await model.read(1 << 16)
            await trio.testing.wait_all_tasks_blocked()
            model.check()
        if not client.kicked:
            assert model.got == model.pushed and client.unsent == 0
        nursery.cancel_scope.cancel()
