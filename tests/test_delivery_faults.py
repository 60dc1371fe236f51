"""Delivery when things go wrong: a committed event whose notification never arrived, and a
dead channel server. Clients that cannot keep up: tests/test_slow_clients.py."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import trio

from ops import cluster as ops_cluster
from tests.conftest import private_cluster, rtm_session
from webapp import store
from webapp.db import Database


def commit_without_notify(cluster, ws, text: str) -> str:
    """Exactly what a webapp that died between commit and notify leaves behind."""
    async def run() -> str:
        db = Database(cluster.settings)
        await db.open()
        try:
            who = store.Identity(ws["users"][0]["id"], ws["team"]["id"], "user1", "t", "d",
                                 False, None)
            _, message = await store.post_message(db, ws["channels"][0]["id"], who, text,
                                                  None, None)
            return message["ts"]
        finally:
            await db.close()

    return asyncio.run(run())


async def post(http: httpx.AsyncClient, cluster, token: str, channel: str, text: str) -> str:
    reply = (await http.post(cluster.api + "chat.postMessage", json={"channel": channel,
                                                                       "text": text},
                             headers={"Authorization": f"Bearer {token}"})).json()
    assert reply["ok"], reply
    return reply["ts"]


async def test_a_quiet_streams_lost_last_event_arrives_by_the_head_check(cluster):
    """Nothing is posted after the lost event, so no gap shows: only a head check can find
    it, and every stream's head is checked within a few head_check_interval_s."""
    ws = cluster.seed(2)
    general, token = ws["channels"][0]["id"], ws["users"][0]["token"]
    async with rtm_session(cluster, ws["users"][1]["token"]) as rtm, httpx.AsyncClient(
        timeout=10
    ) as http:
        first = await post(http, cluster, token, general, "before")
        await rtm.next({"type": "message", "ts": first})
        lost = await trio.to_thread.run_sync(commit_without_notify, cluster, ws, "quiet")
        got = await rtm.next({"type": "message"}, timeout=20)
    assert (got["ts"], got["text"]) == (lost, "quiet")


async def test_lost_notification_is_repaired_from_event_log(cluster):
    ws = cluster.seed(2)
    general, token = ws["channels"][0]["id"], ws["users"][0]["token"]
    async with rtm_session(cluster, ws["users"][1]["token"]) as rtm, httpx.AsyncClient(
        timeout=10
    ) as http:
        first = await post(http, cluster, token, general, "before")
        await rtm.next({"type": "message", "ts": first})
        lost = await trio.to_thread.run_sync(commit_without_notify, cluster, ws, "lost")
        last = await post(http, cluster, token, general, "after")
        got = [await rtm.next({"type": "message"}), await rtm.next({"type": "message"})]
    assert [(e["ts"], e["text"]) for e in got] == [(lost, "lost"), (last, "after")]


@pytest.fixture
def two_channel_servers(tmp_path):
    with private_cluster(tmp_path, channels=2, gateways=1) as c:
        yield c


def channels_owned(c, ws, count: int) -> dict[str, list[str]]:
    """Create channels until each channel server owns one; returns owner -> channel ids."""
    from slack_sdk import WebClient

    from cluster.ring import Ring

    ring = Ring(ops_cluster.read_ring(c.settings))
    client = WebClient(token=ws["users"][0]["token"], base_url=c.api)
    owned: dict[str, list[str]] = {}
    i = 0
    while len(owned) < count or min(map(len, owned.values())) < 1:
        channel = client.conversations_create(name=f"room-{i}")["channel"]["id"]
        owned.setdefault(ring.owner(channel), []).append(channel)
        i += 1
    return owned


async def test_dead_channel_server_does_not_hold_up_posts_elsewhere(two_channel_servers):
    import os
    import signal

    c = two_channel_servers
    ws = c.seed(2)
    owned = await trio.to_thread.run_sync(channels_owned, c, ws, 2)
    victim = c.processes("channel_server")[0]
    dead_room = owned[victim["name"]][0]
    live_room = next(v[0] for k, v in owned.items() if k != victim["name"])
    token = ws["users"][0]["token"]
    async with httpx.AsyncClient(timeout=30) as http:
        for room in (dead_room, live_room):
            await http.post(c.api + "conversations.join", json={"channel": room},
                            headers={"Authorization": f"Bearer {ws['users'][1]['token']}"})
        async with rtm_session(c, ws["users"][1]["token"]) as rtm:
            os.kill(victim["pid"], signal.SIGKILL)
            # committed and acknowledged although its channel server is gone...
            with trio.fail_after(15):
                lost_live = await post(http, c, token, dead_room, "to the dead one")
            # ...and the other channel server's rooms are unaffected
            ok = await post(http, c, token, live_room, "to the live one")
            await rtm.next({"type": "message", "ts": ok})
        history = (await http.get(c.api + "conversations.history",
                                  params={"channel": dead_room, "token": token})).json()
    assert history["messages"][0]["ts"] == lost_live
