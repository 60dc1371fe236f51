"""Timeouts of the real-time tier's links, on trio's autojump clock (virtual time only).

pytest-trio runs a test under the clock returned by the ``autojump_clock`` fixture
(``trio.testing.MockClock(autojump_threshold=0)``), so waits complete instantly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from admin_server.links import (
    ACK_TIMEOUT_S,
    CONNECT_WAIT_S,
    ChannelLink,
    LinkDown,
    encode_item,
)
from gateway_server.upstream import SUBSCRIBE_TIMEOUT_S, Upstream


class RecordingSocket:
    """Stands in for a trio-websocket connection: records what is sent, never answers."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_message(self, message: str | bytes) -> None:
        self.sent.append(json.loads(message))


async def test_link_send_raises_link_down_when_never_up(autojump_clock):
    link = ChannelLink("c1", "ws://127.0.0.1:9", "admin-x", "s3cret")
    start = trio.current_time()
    with pytest.raises(LinkDown):
        await link.publish(1, [encode_item("C1", 1, {})])
    # it waited out the connect window on the virtual clock, not less
    assert trio.current_time() - start >= CONNECT_WAIT_S
    assert not link.up
    assert link._slots == {}


async def test_link_send_waits_for_the_link_to_come_up(autojump_clock):
    link = ChannelLink("c1", "ws://127.0.0.1:9", "admin-x", "s3cret")
    ws = RecordingSocket()

    async def come_up_then_ack() -> None:
        await trio.sleep(CONNECT_WAIT_S / 2)
        link._ws = ws
        link._up.set()
        await trio.testing.wait_all_tasks_blocked()
        frame_id = ws.sent[-1]["id"]
        slot = link._slots[frame_id]
        slot.reply = {"type": "published", "id": frame_id, "epoch": 3, "moved": [],
                      "behind": ["C1"]}
        slot.done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(come_up_then_ack)
        assert await link.publish(3, [encode_item("C1", 7, {"type": "message"})]) == (
            set(), {"C1"})
    (sent,) = ws.sent
    assert sent == {"type": "publish", "id": sent["id"], "epoch": 3, "items": [
        {"stream": "C1", "seq": 7, "event": {"type": "message"}}]}
    assert link._slots == {}


async def test_link_send_raises_link_down_when_ack_never_comes(autojump_clock):
    link = ChannelLink("c1", "ws://127.0.0.1:9", "admin-x", "s3cret")
    ws = RecordingSocket()
    link._ws = ws
    link._up.set()
    start = trio.current_time()
    with pytest.raises(LinkDown):
        await link.publish(1, [encode_item("C1", 1, {})])
    assert trio.current_time() - start >= ACK_TIMEOUT_S
    assert len(ws.sent) == 1
    assert link._slots == {}  # the waiting slot is not leaked


async def test_upstream_subscribe_raises_too_slow_when_never_connected(autojump_clock):
    async def on_frame(upstream: Upstream, frame: dict[str, Any]) -> None:
        raise AssertionError("no frames expected")

    upstream = Upstream("channel-1", "ws://127.0.0.1:9", "gateway-1", "s3cret", wanted=set,
                        on_frame=on_frame, positions=lambda streams: {},
                        on_subscribed=lambda up, frame, caught_up: None)
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await upstream.subscribe(["C1", "C2"], epoch=1)
    assert trio.current_time() - start >= SUBSCRIBE_TIMEOUT_S
    assert upstream.subscribed == set()


async def test_upstream_subscribe_times_out_when_no_answer(autojump_clock):
    async def on_frame(upstream: Upstream, frame: dict[str, Any]) -> None:
        raise AssertionError("no frames expected")

    upstream = Upstream("channel-1", "ws://127.0.0.1:9", "gateway-1", "s3cret", wanted=set,
                        on_frame=on_frame, positions=lambda streams: {"C1": 7},
                        on_subscribed=lambda up, frame, caught_up: None)
    ws = RecordingSocket()
    upstream._ws = ws
    upstream._up.set()
    upstream._epoch = lambda: 4  # the ring's epoch, as run() is given it
    async with trio.open_nursery() as nursery:
        nursery.start_soon(upstream._subscriber.run)  # what run() starts
        with pytest.raises(trio.TooSlowError):
            await upstream.subscribe(["C2", "C1", "C1"], epoch=4)
        nursery.cancel_scope.cancel()
    # the position we have goes with the subscribe: the owner catches us up from there
    assert ws.sent == [{"type": "subscribe", "id": ws.sent[0]["id"], "epoch": 4,
                        "streams": ["C1", "C2"], "after": {"C1": 7}}]
    assert upstream.subscribed == set()
    # like ChannelLink's slots, the waiter for the unanswered request must not outlive it
    # (otherwise every timed-out subscribe on a live link leaks one entry until reconnect)
    assert upstream._acks == {}


async def test_an_unanswered_subscribe_does_not_hold_up_later_ones(autojump_clock):
    """Subscribes share batches: a batch whose answer never comes must fail on its own
    deadline, so the next subscribe on the same link goes out."""
    async def on_frame(upstream: Upstream, frame: dict[str, Any]) -> None:
        raise AssertionError("no frames expected")

    upstream = Upstream("channel-1", "ws://127.0.0.1:9", "gateway-1", "s3cret", wanted=set,
                        on_frame=on_frame, positions=lambda streams: {},
                        on_subscribed=lambda up, frame, caught_up: None)
    ws = RecordingSocket()
    upstream._ws = ws
    upstream._up.set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(upstream._subscriber.run)
        for stream in ("C1", "C2"):
            with pytest.raises(trio.TooSlowError):
                await upstream.subscribe([stream], epoch=1)
        nursery.cancel_scope.cancel()
    assert [f["streams"] for f in ws.sent] == [["C1"], ["C2"]]
    assert upstream._acks == {}
