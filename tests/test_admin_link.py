"""The webapp -> admin link (webapp/adminlink.py, admin_server/server.py): the cluster
secret before anything else, bad frames answered or the link closed without harm to the
admin, concurrent notifies sharing frames, and an admin killed with -9 under posts (the
webapp reconnects to its successor; every event still reaches the clients)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import trio
from prometheus_client import REGISTRY
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from cluster import registry
from ops import cluster as ops_cluster
from tests.conftest import Cluster, private_cluster, rtm_session
from webapp.adminlink import AdminLinks
from webapp.store.streams import Posted

WAIT_S = 20.0
REFUSED = {"ok": False, "error": "invalid_arguments"}


def admin_links(c: Cluster) -> dict[str, str]:
    """name -> link address, as the admins announce it in their leases."""
    client = redis.Redis.from_url(c.settings.redis_url)
    try:
        raw = client.hgetall(registry.registry_key(c.settings.redis_prefix, "admin_server"))
    finally:
        client.close()
    return {name: doc["link"] for name, doc in registry.live(raw).items() if "link" in doc}


def secret(c: Cluster) -> str:
    return c.internal_headers()["x-backchannel-internal"]


def hello(key: Any) -> str:
    return json.dumps({"type": "hello", "role": "webapp", "name": "test", "secret": key})


@asynccontextmanager
async def link(c: Cluster, first: str | None = None) -> AsyncIterator[WebSocketConnection]:
    """A raw link to the (first) admin; ``first``: its opening frame (default: a good hello)."""
    url = next(iter(admin_links(c).values()))
    async with open_websocket_url(url, max_message_size=32 << 20) as ws:
        await ws.send_message(hello(secret(c)) if first is None else first)
        yield ws


async def assert_closed(ws: WebSocketConnection) -> None:
    with pytest.raises(ConnectionClosed), trio.fail_after(WAIT_S):
        while True:
            await ws.get_message()


async def answers(ws: WebSocketConnection, count: int) -> dict[int, dict[str, Any]]:
    """The next ``count`` notify answers, by id (they may come in one frame or several)."""
    out: dict[int, dict[str, Any]] = {}
    with trio.fail_after(WAIT_S):
        while len(out) < count:
            frame = json.loads(await ws.get_message())
            assert frame["type"] == "notified"
            out.update({item["id"]: item for item in frame["items"]})
    return out


def notify(*items: dict[str, Any]) -> str:
    return json.dumps({"type": "notify", "items": list(items)})


async def post(http: httpx.AsyncClient, c: Cluster, token: str, channel: str,
               text: str) -> dict[str, Any]:
    resp = await http.post(c.api + "chat.postMessage", json={"channel": channel, "text": text},
                           headers={"Authorization": f"Bearer {token}"})
    body = resp.json()
    assert body["ok"], body
    return body


async def head(http: httpx.AsyncClient, c: Cluster, stream: str) -> int:
    resp = await http.post(c.root + "/internal/heads", json={"streams": [stream]},
                           headers=c.internal_headers())
    return int(resp.json()["heads"][stream])


async def real_post_comes_first(http: httpx.AsyncClient, c: Cluster, rtm: Any, token: str,
                                channel: str, text: str) -> None:
    """A real post is the next message the member sees: nothing injected got in first
    (an injected event with the next seq would have made the real one a duplicate)."""
    await post(http, c, token, channel, text)
    event = await rtm.next(lambda e: e.get("type") == "message" and e.get("channel") == channel)
    assert event["text"] == text


def fake(stream: str, seq: int) -> dict[str, Any]:
    return {"stream": stream, "seq": seq, "event": {
        "type": "message", "channel": stream, "text": "INJECTED", "ts": "1700000000.000001"}}


async def test_a_link_without_the_secret_is_refused_before_anything_else(
    cluster: Cluster,
) -> None:
    ws = cluster.seed(2)
    user, general = ws["users"][0], ws["channels"][0]["id"]
    async with httpx.AsyncClient(timeout=30) as http, \
            rtm_session(cluster, user["token"]) as rtm:
        forged = notify({"id": 1, "events": [fake(general, await head(http, cluster, general)
                                                  + 1)]})
        openings = [hello(None), hello("guess"), hello(1), hello(secret(cluster) + "x"),
                    json.dumps({"type": "notify", "secret": secret(cluster)}),
                    forged, "not json", '["hello"]']
        for opening in openings:
            async with link(cluster, opening) as conn:
                try:
                    await conn.send_message(forged)
                except ConnectionClosed:
                    pass  # closed at the opening already
                await assert_closed(conn)
        await real_post_comes_first(http, cluster, rtm, user["token"], general, "after hellos")


async def test_bad_frames_are_answered_or_close_the_link_and_the_admin_goes_on(
    cluster: Cluster,
) -> None:
    ws = cluster.seed(2)
    user, general = ws["users"][0], ws["channels"][0]["id"]
    async with httpx.AsyncClient(timeout=30) as http, \
            rtm_session(cluster, user["token"]) as rtm:
        good = fake(general, await head(http, cluster, general) + 1)
        # a notify with a bad event is answered as such; the link stays up for the next
        async with link(cluster) as conn:
            bad_events: list[Any] = [
                "not a list", [], [good] * 1001, [{**good, "seq": "1"}],
                [{**good, "seq": -1}], [{**good, "seq": True}], [{**good, "stream": 7}],
                [{**good, "event": "text"}], [good, "not an object"]]
            for n, events in enumerate(bad_events, 1):
                await conn.send_message(notify({"id": n, "events": events}))
                assert await answers(conn, 1) == {n: {"id": n, **REFUSED}}
            # the good one of a frame still goes; the bad one beside it is refused
            typing = {"stream": "CNOBODY", "seq": 0, "event": {"type": "user_typing"}}
            await conn.send_message(notify({"id": 100, "events": [typing]},
                                           {"id": 101, "events": [{**typing, "seq": "x"}]}))
            got = await answers(conn, 2)
            assert got[100] == {"id": 100, "ok": True, "behind": []}
            assert got[101] == {"id": 101, **REFUSED}
        # frames with nobody to answer close the link
        closing = [b"\xff\xfe", "{{{", "[1]", json.dumps({"type": "nope"}),
                   json.dumps({"type": "notify", "items": "x"}),
                   json.dumps({"type": "notify", "items": []}),
                   notify("not an object"), notify({"events": [good]}),
                   notify({"id": "1", "events": [good]}), notify({"id": -1, "events": [good]}),
                   notify({"id": 2**64, "events": [good]}),
                   b"x" * (17 << 20)]  # past the link's frame limit
        for frame in closing:
            async with link(cluster) as conn:
                try:
                    await conn.send_message(frame)
                except ConnectionClosed as exc:  # the oversized one: refused as it arrives
                    assert exc.reason.code == 1009
                await assert_closed(conn)
        for admin in cluster.processes("admin_server"):
            assert (await http.get(admin["http_url"] + "/health")).status_code == 200
        await real_post_comes_first(http, cluster, rtm, user["token"], general, "after frames")


def test_concurrent_notifies_share_frames(cluster: Cluster) -> None:
    """Notifies made while the link's writer is busy go out together: fewer frames than
    notifies, on both ends, and every notify answered."""
    found = admin_links(cluster)
    admin = cluster.processes("admin_server")[0]

    def admin_counts() -> tuple[float, float]:
        text = httpx.get(admin["http_url"] + "/metrics").text
        frames = notifies = 0.0
        for line in text.splitlines():
            if line.startswith('backchannel_admin_server_webapp_frames_total{direction="in"}'):
                frames += float(line.split()[-1])
            if line.startswith("backchannel_admin_server_webapp_notifies_total{"):
                notifies += float(line.split()[-1])
        return frames, notifies

    def sent() -> tuple[float, float]:
        return (REGISTRY.get_sample_value("backchannel_webapp_admin_link_frames_total") or 0,
                REGISTRY.get_sample_value("backchannel_webapp_admin_link_notifies_total",
                                          {"outcome": "sent"}) or 0)

    async def scenario() -> list[bool]:
        async def discover() -> dict[str, str]:
            return found

        links = AdminLinks(secret(cluster), "test", discover, lambda streams: None, 1)
        try:
            await links.sync()
            async with asyncio.timeout(WAIT_S):
                for one in links.links.values():
                    await one.up.wait()
            batches = [[Posted("CNOBODY", 0, {"type": "user_typing", "n": n})]
                       for n in range(200)]
            return await asyncio.gather(*(links.send(b) for b in batches))
        finally:
            links.close()

    frames_before, notifies_before = sent()
    admin_before = admin_counts()
    assert all(asyncio.run(scenario()))
    frames_after, notifies_after = sent()
    assert notifies_after - notifies_before == 200
    assert 0 < frames_after - frames_before < 200
    admin_after = admin_counts()
    frames, notifies = (a - b for a, b in zip(admin_after, admin_before, strict=True))
    assert notifies >= 200 and 0 < frames < notifies


def restart_admin(c: Cluster) -> dict[str, Any]:
    """Start the admin again under its name (new ports, so a new link address)."""
    name = c.processes("admin_server")[0]["name"]
    proc = ops_cluster.spawn(c.run_dir, "admin_server", name, Path(c.state["config"]))
    info = ops_cluster.wait_addrs(c.run_dir, {name: proc})[name]
    ops_cluster.wait_healthy([info])
    ops_cluster.add_process(c.run_dir, {**info, "pid": proc.pid})  # stop_cluster ends it
    return info


async def test_admin_killed_under_posts_every_event_still_arrives_once(
    tmp_path: Path,
) -> None:
    """Posts go on while the only admin is killed with -9 and started again: they commit
    (their notifies fail and wait in the outbox's retry queue), the webapp links to the
    new admin, and the member gets every message exactly once, in order."""
    with private_cluster(tmp_path, notify_deadline_s=0.5) as c:
        ws = c.seed(2)
        poster, member = ws["users"]
        general = ws["channels"][0]["id"]
        admin_pid = c.processes("admin_server")[0]["pid"]
        posted: list[tuple[str, str]] = []
        async with httpx.AsyncClient(timeout=30) as http, \
                rtm_session(c, member["token"]) as rtm:

            async def post_some(label: str, count: int) -> None:
                for n in range(count):
                    text = f"kill {label} {n}"
                    posted.append(((await post(http, c, poster["token"], general, text))["ts"],
                                   text))

            await post_some("before", 5)
            os.kill(admin_pid, signal.SIGKILL)
            await post_some("dead", 5)
            info = await trio.to_thread.run_sync(restart_admin, c)
            await post_some("after", 5)
            got: list[str] = []
            while len(got) < len(posted):
                event = await rtm.next(lambda e: e.get("type") == "message"
                                       and e.get("channel") == general, timeout=WAIT_S)
                got.append(event["text"])
            assert got == [text for _, text in sorted(posted)]
            # and nothing comes twice later: the next one is a new post
            await real_post_comes_first(http, c, rtm, poster["token"], general, "kill end")
            with trio.fail_after(WAIT_S):
                while (await http.get(info["http_url"] + "/health")).json()[
                        "webapp_links"] < 1:
                    await trio.sleep(0.05)
