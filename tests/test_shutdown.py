"""Graceful shutdown: a gateway that is stopped says `goodbye` to its clients (slack_sdk
reconnects on it) and leaves the registry, so rtm.connect stops handing out its URL."""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from ops import cluster as ops_cluster
from tests.conftest import gateway_of, private_cluster, rtm_session


@pytest.fixture
def two_gateways(tmp_path):
    with private_cluster(tmp_path, channels=1, gateways=2) as c:
        yield c


async def test_stopped_gateway_says_goodbye_and_leaves_registry(two_gateways):
    c = two_gateways
    ws = c.seed(1)
    token = ws["users"][0]["token"]
    async with rtm_session(c, token) as rtm:
        victim = next(p for p in c.processes("gateway_server") if p["url"] == gateway_of(rtm))
        os.kill(victim["pid"], signal.SIGTERM)
        goodbye = await rtm.next({"type": "goodbye"})
        assert goodbye["type"] == "goodbye"
        with pytest.raises(ConnectionClosed), trio.fail_after(10):
            await rtm.ws.get_message()
    with trio.fail_after(10):
        while ops_cluster.alive(victim["pid"]):
            await trio.sleep(0.05)
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(10):
            reply = (await http.post(c.api + "rtm.connect",
                                     headers={"Authorization": f"Bearer {token}"})).json()
            assert reply["ok"] and not reply["url"].startswith(victim["url"]), json.dumps(reply)
