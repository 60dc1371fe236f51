"""gateway_server/client.py's output path over a real socket pair: shared frames, direct
writes, the flush task, slow and capped clients. Timing with trio's autojump clock."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from gateway_server.client import Backlog, Client, Limits, text_frame

SMALL_BUF = 4096


def pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
    return trio.SocketStream(a), trio.SocketStream(b)


def make(nursery: trio.Nursery, limits: Limits, backlog: Backlog | None = None,
         ) -> tuple[Client, trio.SocketStream]:
    server, peer = pair()
    client = Client(server, None, "U1", "T1", limits, nursery.start_soon, backlog)
    client.ready = True
    return client, peer


def parse(data: bytes) -> list[str]:
    """Every text frame in ``data``, through wsproto's client-side parser."""
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(data)
    out = []
    for frame in proto.received_frames():
        assert frame.opcode is Opcode.TEXT and frame.frame_finished and frame.message_finished
        out.append(frame.payload)
    return out


async def read_all(peer: trio.SocketStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await peer.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


LOOSE = Limits(slow_bytes=1 << 20, slow_after_s=60.0, max_bytes=1 << 26)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_text_frame_length_headers(size):
    payload = "x" * size
    frame = text_frame(payload)
    header = 2 if size < 126 else 4 if size <= 65535 else 10
    assert len(frame) == header + size
    assert parse(frame) == [payload]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=3000), min_size=1, max_size=40),
       st.integers(min_value=0, max_value=2))
async def test_everything_arrives_once_in_order_through_direct_and_flushed_writes(
        payloads, batch):
    """More than the socket buffers hold, pushed one by one or coalesced in batches: the
    peer parses exactly the payloads, in order, as valid frames."""
    payloads = payloads * 4
    frames = [text_frame(p) for p in payloads]
    async with trio.open_nursery() as nursery:
        client, peer = make(nursery, LOOSE)
        if batch:
            for i in range(0, len(frames), 5):
                client.push_frame(b"".join(frames[i:i + 5]))
        else:
            for payload in payloads:
                client.push(payload)
        got = await read_all(peer, sum(map(len, frames)))
        await client.drained()  # the peer can read the last chunk before the flush resumes
        assert not client.kicked
        assert client.unsent == 0
        nursery.cancel_scope.cancel()
    assert parse(got) == payloads


async def test_a_writable_socket_needs_no_flush_task():
    async with trio.open_nursery() as nursery:
        spawned: list[Any] = []
        server, peer = pair()
        client = Client(server, None, "U1", "T1", LOOSE, lambda *a: spawned.append(a))
        client.ready = True
        client.push("hello")
        assert spawned == [] and client.unsent == 0
        assert parse(await read_all(peer, len(text_frame("hello")))) == ["hello"]
        nursery.cancel_scope.cancel()


async def test_nothing_is_written_before_hello_or_after_a_kick():
    async with trio.open_nursery() as nursery:
        client, peer = make(nursery, LOOSE)
        client.ready = False
        client.push("early")
        client.ready = True
        client.push("first")
        client.kick("ring change")
        client.push("late")
        assert parse(await read_all(peer, len(text_frame("first")))) == ["first"]
        nursery.cancel_scope.cancel()


async def test_a_client_that_stops_reading_is_closed_after_the_deadline(autojump_clock):
    limits = Limits(slow_bytes=50_000, slow_after_s=5.0, max_bytes=10_000_000)
    backlog = Backlog(1 << 30)
    async with trio.open_nursery() as nursery:
        client, peer = make(nursery, limits, backlog)
        start = trio.current_time()
        for _ in range(100):
            client.push("y" * 1000)  # the peer never reads
        assert client.unsent > limits.slow_bytes and not client.kicked
        assert backlog.bytes == client.unsent
        while not client.kicked:
            await trio.sleep(0.5)
        assert client.kick_reason == "too slow"
        assert trio.current_time() - start >= limits.slow_after_s
        assert client.unsent == 0 and backlog.bytes == 0  # what waited is dropped
        nursery.cancel_scope.cancel()


async def test_a_pause_shorter_than_the_deadline_is_not_slow(autojump_clock):
    limits = Limits(slow_bytes=50_000, slow_after_s=5.0, max_bytes=10_000_000)
    payloads = [f"{i} " + "z" * 1000 for i in range(100)]
    async with trio.open_nursery() as nursery:
        client, peer = make(nursery, limits)
        for payload in payloads:
            client.push(payload)
        await trio.sleep(limits.slow_after_s / 2)
        got = await read_all(peer, sum(len(text_frame(p)) for p in payloads))
        await client.drained()  # the peer can read the last chunk before the flush resumes
        assert not client.kicked and client.unsent == 0
        nursery.cancel_scope.cancel()
    assert parse(got) == payloads


async def test_over_the_hard_cap_the_client_is_closed_at_once(autojump_clock):
    limits = Limits(slow_bytes=10_000, slow_after_s=600.0, max_bytes=100_000)
    async with trio.open_nursery() as nursery:
        client, peer = make(nursery, limits)
        start = trio.current_time()
        while not client.kicked:
            client.push("w" * 5000)
        assert client.kick_reason == "too slow"
        assert trio.current_time() == start  # no waiting for the deadline
        assert client.unsent == 0
        nursery.cancel_scope.cancel()


async def test_paced_pushes_wait_for_room_and_keep_order(autojump_clock):
    limits = Limits(slow_bytes=20_000, slow_after_s=600.0, max_bytes=1_000_000)
    payloads = [f"r{i} " + "p" * 500 for i in range(300)]
    async with trio.open_nursery() as nursery:
        client, peer = make(nursery, limits)

        async def replay() -> None:
            for payload in payloads:
                await client.push_paced(payload)

        nursery.start_soon(replay)
        await trio.testing.wait_all_tasks_blocked()
        assert client.unsent <= limits.slow_bytes // 2 + 600
        got = await read_all(peer, sum(len(text_frame(p)) for p in payloads))
        assert not client.kicked
        nursery.cancel_scope.cancel()
    assert parse(got) == payloads


async def test_backlog_gates_until_clients_drain():
    backlog = Backlog(100)
    backlog.add(150)
    passed = trio.Event()

    async def reader() -> None:
        await backlog.wait_below()
        passed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert not passed.is_set()
        backlog.sub(60)
        await passed.wait()
    assert backlog.bytes == 90


async def test_a_reset_peer_kicks_as_closed(autojump_clock):
    async with trio.open_nursery() as nursery:
        client, peer = make(nursery, LOOSE)
        await peer.aclose()
        for _ in range(50):
            client.push("q" * 2000)
            if client.kicked:
                break
            await trio.sleep(0.01)
        assert client.kick_reason == "closed"
        nursery.cancel_scope.cancel()
