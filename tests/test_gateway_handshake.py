"""The gateway's own upgrade handling (gateway_server/sockets.py, wsproto driven directly):
raw bytes that are not a WebSocket upgrade, in every shape, get an HTTP answer or a close,
never a crash, and the gateway keeps serving real clients."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.test_bad_frames import assert_all_healthy, rtm_url

WAIT_S = 15


async def exchange(url: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh TCP connection to the gateway; everything it answers
    until it closes the connection."""
    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    got = bytearray()
    with trio.fail_after(WAIT_S):
        try:
            await stream.send_all(data)
            while chunk := await stream.receive_some(65536):
                got += chunk
        except trio.BrokenResourceError:
            pass  # reset after answering: what it sent first is in `got`
        finally:
            await stream.aclose()
    return bytes(got)


UPGRADE = ("GET /rtm?ticket=x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")

CASES: list[Any] = [
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, id="tls-hello"),
    pytest.param(b"\xff\xfe\x00garbage\r\n\r\n", id="binary-garbage"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", id="plain-get"),
    pytest.param(b"POST /rtm HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", id="post"),
    pytest.param((UPGRADE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8")
                  + "\r\n").encode(), id="wrong-version"),
    pytest.param((UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")
                  + "\r\n").encode(), id="no-key"),
    pytest.param((UPGRADE + "X-Pad: " + "a" * 70_000 + "\r\n\r\n").encode(), id="huge-headers"),
    pytest.param(b"GET /rtm HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n", id="many-headers"),
    pytest.param(b"\r\n\r\n\r\n", id="blank-lines"),
]


@pytest.mark.parametrize("data", CASES)
async def test_a_bad_upgrade_is_answered_or_closed_and_the_gateway_keeps_serving(
        cluster: Any, data: bytes) -> None:
    gateway = cluster.processes("gateway_server")[0]
    answer = await exchange(gateway["url"], data)
    # an HTTP error or a plain close: never a 101, never a hang
    assert not answer.startswith(b"HTTP/1.1 101"), answer[:80]
    if answer:
        assert answer.startswith(b"HTTP/1.1 4"), answer[:80]
    async with httpx.AsyncClient(timeout=10) as http:
        await assert_all_healthy(http, cluster)
        ws = cluster.seed(1)
        url = await rtm_url(http, cluster, ws["users"][0]["token"])
    async with open_websocket_url(url) as conn:
        with trio.fail_after(WAIT_S):
            assert json.loads(await conn.get_message())["type"] == "hello"


async def test_a_valid_upgrade_without_a_ticket_gets_slacks_401_body(cluster: Any) -> None:
    gateway = cluster.processes("gateway_server")[0]
    answer = await exchange(gateway["url"], (UPGRADE + "\r\n").encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    assert json.loads(body) == {"ok": False, "error": "invalid_auth"}


async def test_bytes_after_the_upgrade_in_the_same_packet_are_not_lost(cluster: Any) -> None:
    """A client may send its first frame right behind the request, in one packet: wsproto
    hands the trailing bytes to the open connection, and the ping is answered."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request, TextMessage
    from wsproto.frame_protocol import FrameProtocol

    async with httpx.AsyncClient(timeout=10) as http:
        ws = cluster.seed(1)
        url = await rtm_url(http, cluster, ws["users"][0]["token"])
    parts = urlsplit(url)
    client = WSConnection(ConnectionType.CLIENT)
    request = client.send(Request(host=parts.netloc, target=f"{parts.path}?{parts.query}"))
    ping = bytes(FrameProtocol(client=True, extensions=[]).send_data(
        '{"type":"ping","id":9}', fin=True))
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    events: list[Any] = []
    with trio.fail_after(WAIT_S):
        await stream.send_all(request + ping)
        while not any('"pong"' in e.data for e in events if isinstance(e, TextMessage)):
            client.receive_data(await stream.receive_some(65536))
            events += list(client.events())
    await stream.aclose()
    assert isinstance(events[0], AcceptConnection)
    texts = [json.loads(e.data) for e in events if isinstance(e, TextMessage)]
    assert texts[0]["type"] == "hello"
    assert {"type": "pong", "reply_to": 9} in texts
