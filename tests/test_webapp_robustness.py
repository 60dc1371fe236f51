"""Webapp robustness through real processes: client_msg_id idempotency that survives a
webapp killed mid-post and a Redis that lost (or kept stale) keys; header, body and keep-alive
timeouts against raw sockets; HEAD that never runs a method."""

from __future__ import annotations

import collections
import json
import os
import secrets
import signal
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pymysql
import pytest
import redis
import trio
from slack_sdk import WebClient

from cluster import shards
from ops import cluster as ops_cluster
from tests.conftest import Cluster, private_cluster, rtm_session
from webapp.actions import messages as methods
from webapp.db import Database

# --- helpers -------------------------------------------------------------------------------


def idem_key(c: Cluster, user_id: str, cmid: str) -> str:
    return f"{c.settings.redis_prefix}idem:{user_id}:{cmid}"


def redis_client(c: Cluster) -> redis.Redis:
    return redis.Redis.from_url(c.settings.redis_url)


def history_cmids(c: Cluster, token: str, channel: str) -> collections.Counter[str]:
    """client_msg_id -> how many messages of the channel carry it (every page)."""
    web = WebClient(token=token, base_url=c.api)
    seen: collections.Counter[str] = collections.Counter()
    cursor = None
    while True:
        page = web.conversations_history(channel=channel, limit=999, cursor=cursor)
        seen.update(m["client_msg_id"] for m in page["messages"] if "client_msg_id" in m)
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            return seen


def logged_cmids(c: Cluster, stream: str) -> collections.Counter[str]:
    """client_msg_id -> how many message events the stream's event log holds for it."""
    seen: collections.Counter[str] = collections.Counter()
    after = 0
    while True:
        resp = httpx.get(c.root + "/internal/events", headers=c.internal_headers(),
                         params={"stream": stream, "after_seq": after, "limit": 1000})
        page = resp.json()["events"]
        if not page:
            return seen
        seen.update(e["event"]["client_msg_id"] for e in page
                    if e["event"].get("type") == "message" and "client_msg_id" in e["event"])
        after = page[-1]["seq"]


def post(c: Cluster, token: str, channel: str, cmid: str, text: str = "once") -> dict[str, Any]:
    reply = WebClient(token=token, base_url=c.api).chat_postMessage(
        channel=channel, text=text, client_msg_id=cmid)
    return reply.data  # type: ignore[return-value]


def timed_post(c: Cluster, token: str, channel: str, cmid: str) -> tuple[float, dict[str, Any]]:
    start = time.monotonic()
    reply = post(c, token, channel, cmid)
    return time.monotonic() - start, reply


def pending_lease_s(settings: Any) -> int:
    """The webapp's own lease for a "pending" claim under these settings."""
    return methods.pending_lease_s(types.SimpleNamespace(  # type: ignore[arg-type]
        db=Database(settings), settings=settings))


# --- idempotency: Redis is only the fast path ---------------------------------------------


def test_retry_after_redis_lost_the_key_returns_the_first_message(cluster: Cluster) -> None:
    ws = cluster.seed(2)
    user, channel = ws["users"][0], ws["channels"][0]["id"]
    cmid = "lost-" + secrets.token_hex(8)
    first = post(cluster, user["token"], channel, cmid)
    with redis_client(cluster) as r:
        keys = list(r.scan_iter(match=idem_key(cluster, user["id"], "*")))
        assert keys, "the first post cached its reply"
        r.delete(*keys)
    again = post(cluster, user["token"], channel, cmid)
    assert (again["ok"], again["channel"], again["ts"]) == (True, channel, first["ts"])
    assert again["message"] == first["message"]
    assert again["message"]["client_msg_id"] == cmid
    assert history_cmids(cluster, user["token"], channel)[cmid] == 1
    assert logged_cmids(cluster, channel)[cmid] == 1, "a recovered reply posts no event"


def test_stale_pending_key_does_not_hold_up_a_retry(cluster: Cluster) -> None:
    """What a process killed mid-post leaves: "pending" and no reply, before or after its
    commit. Set by hand with the old 24 h TTL: the retry must not wait for it."""
    ws = cluster.seed(2)
    user, channel = ws["users"][0], ws["channels"][0]["id"]
    never_committed = "stale-a-" + secrets.token_hex(6)
    committed = "stale-b-" + secrets.token_hex(6)
    first = post(cluster, user["token"], channel, committed)
    with redis_client(cluster) as r:
        for cmid in (never_committed, committed):
            r.set(idem_key(cluster, user["id"], cmid), "pending", ex=86400)
    took_a, a = timed_post(cluster, user["token"], channel, never_committed)
    took_b, b = timed_post(cluster, user["token"], channel, committed)
    print(f"retry over a stale pending key: {took_a:.3f} s (new), {took_b:.3f} s (committed)")
    assert a["ok"] and a["message"]["client_msg_id"] == never_committed
    assert (b["ts"], b["message"]) == (first["ts"], first["message"])
    assert max(took_a, took_b) < 3.0
    counts = history_cmids(cluster, user["token"], channel)
    assert (counts[never_committed], counts[committed]) == (1, 1)
    logged = logged_cmids(cluster, channel)
    assert (logged[never_committed], logged[committed]) == (1, 1)
    with redis_client(cluster) as r:  # the fast path is back: the reply replaced "pending"
        assert r.get(idem_key(cluster, user["id"], committed)) not in (None, b"pending")


# --- idempotency: kill -9 of the webapp mid-post -------------------------------------------

WAVE = 20  # posts per kind of interrupted attempt


def hold_stream_lock(c: Cluster, channel: str) -> pymysql.connections.Connection:
    """X-lock the channel's seq allocator as a long transaction would: posts queue behind
    it, after they claimed their client_msg_id and before they commit."""
    s = c.settings
    conn = pymysql.connect(host=s.mysql_host, port=s.mysql_port, user=s.mysql_user,
                           password=s.mysql_password, autocommit=False,
                           database=s.db_name("chat", shards.shard_for(channel, s.chat_shards)))
    with conn.cursor() as cur:
        cur.execute("SELECT seq FROM stream_seq WHERE stream_id=%s FOR UPDATE", (channel,))
    return conn


def restart_webapp(c: Cluster) -> str:
    """Start the webapp again under its name (a new port); returns its API base URL."""
    name = c.processes("webapp")[0]["name"]
    proc = ops_cluster.spawn(c.run_dir, "webapp", name, Path(c.state["config"]))
    info = ops_cluster.wait_addrs(c.run_dir, {name: proc})[name]
    ops_cluster.wait_healthy([info])
    ops_cluster.add_process(c.run_dir, {**info, "pid": proc.pid})  # stop_cluster ends it
    return info["webapp_url"]


async def wait_until(pred: Any, timeout: float, what: str) -> None:
    deadline = trio.current_time() + timeout
    while not await trio.to_thread.run_sync(pred):
        assert trio.current_time() < deadline, f"timed out waiting until {what}"
        await trio.sleep(0.05)


async def post_all(api: str, token: str, channel: str, cmids: list[str],
                   out: dict[str, Any]) -> None:
    """Post every id at once; ``out[cmid]`` is the reply or the exception it died with."""
    async with httpx.AsyncClient(timeout=60) as http:

        async def one(cmid: str) -> None:
            start = time.monotonic()
            try:
                resp = await http.post(api + "chat.postMessage", headers={
                    "Authorization": f"Bearer {token}"}, json={
                    "channel": channel, "text": f"crash {cmid}", "client_msg_id": cmid})
                out[cmid] = (time.monotonic() - start, resp.json())
            except httpx.HTTPError as exc:
                out[cmid] = exc

        async with trio.open_nursery() as nursery:
            for cmid in cmids:
                nursery.start_soon(one, cmid)


async def test_webapp_killed_mid_post_every_retry_answers_ok_once(tmp_path: Path) -> None:
    """Two waves are in flight when the webapp gets kill -9: one committed and waiting on
    the admin server (stopped, so the notify hangs), one claimed and queued behind a held
    stream lock. Every id's key is left "pending". Retried against the restarted webapp,
    each answers ok, the channel holds one message per id, the event log one event per id,
    and a member's RTM socket gets each exactly once."""
    # a notify deadline long enough that the committed wave is still waiting at the kill
    with private_cluster(tmp_path, notify_deadline_s=20.0) as c:
        ws = c.seed(2)
        poster, member = ws["users"]
        channel = ws["channels"][0]["id"]
        committed = [f"c{i}-{secrets.token_hex(4)}" for i in range(WAVE)]
        queued = [f"q{i}-{secrets.token_hex(4)}" for i in range(WAVE)]
        admin = c.processes("admin_server")[0]["pid"]
        webapp = c.processes("webapp")[0]["pid"]
        r = redis_client(c)
        first: dict[str, Any] = {}
        seen: collections.Counter[str] = collections.Counter()

        async with rtm_session(c, member["token"]) as rtm, trio.open_nursery() as outer:

            async def collect() -> None:
                while True:
                    event = await rtm.next(lambda e: e.get("type") == "message", timeout=120)
                    seen[event.get("client_msg_id", "")] += 1

            outer.start_soon(collect)
            os.kill(admin, signal.SIGSTOP)
            lock = None
            try:
                async with trio.open_nursery() as inflight:
                    inflight.start_soon(post_all, c.api, poster["token"], channel, committed,
                                        first)
                    await wait_until(lambda: sum(history_cmids(
                        c, member["token"], channel).values()) == WAVE, 15, "wave 1 committed")
                    lock = await trio.to_thread.run_sync(hold_stream_lock, c, channel)
                    inflight.start_soon(post_all, c.api, poster["token"], channel, queued,
                                        first)
                    await wait_until(lambda: all(
                        r.get(idem_key(c, poster["id"], q)) == b"pending" for q in queued),
                        15, "wave 2 claimed")
                    os.kill(webapp, signal.SIGKILL)
            finally:
                if lock is not None:
                    lock.rollback()
                    lock.close()
                os.kill(admin, signal.SIGCONT)

            assert all(isinstance(first[k], Exception) for k in committed + queued), first
            lease = pending_lease_s(c.settings)
            # the committed wave cached its reply at commit (the outbox sends the events
            # after the handler returns); the queued wave holds only its "pending" claim
            for cmid in committed:
                held = r.get(idem_key(c, poster["id"], cmid))
                assert held is not None and json.loads(held)["message"]["client_msg_id"] == cmid
            for cmid in queued:
                key = idem_key(c, poster["id"], cmid)
                assert r.get(key) == b"pending"
                assert 0 < r.ttl(key) <= lease < 120, "a short lease, not the 24 h cache"

            api = await trio.to_thread.run_sync(restart_webapp, c)
            c.state["webapp_url"] = api
            # the first wave committed before the kill, the second did not
            assert history_cmids(c, member["token"], channel) == dict.fromkeys(committed, 1)
            retried: dict[str, Any] = {}
            await post_all(api, poster["token"], channel, committed + queued, retried)
            bad = {k: v for k, v in retried.items() if isinstance(v, Exception) or not v[1]["ok"]}
            assert not bad, bad
            for wave, ids in (("committed", committed), ("queued", queued)):
                took = sorted(retried[k][0] for k in ids)
                print(f"retries after kill -9 ({wave}): median {took[len(took) // 2]:.3f} s, "
                      f"max {took[-1]:.3f} s; pending lease {lease} s")
                assert took[-1] < 5.0

            hist = history_cmids(c, member["token"], channel)
            assert hist == dict.fromkeys(committed + queued, 1), hist
            assert logged_cmids(c, channel) == dict.fromkeys(committed + queued, 1)
            # the recovered replies are the committed messages, as the first reply would be
            web = WebClient(token=member["token"], base_url=api)
            stored = {m["client_msg_id"]: m for m in web.conversations_history(
                channel=channel, limit=999)["messages"]}
            for cmid, (_, reply) in retried.items():
                assert reply["channel"] == channel
                assert reply["ts"] == reply["message"]["ts"] == stored[cmid]["ts"]
                assert reply["message"]["client_msg_id"] == cmid

            # the first wave's events reach the member through the head checks, once each
            with trio.fail_after(20):
                while len(seen) < 2 * WAVE:
                    await trio.sleep(0.05)
            await trio.sleep(1.5)  # a second head check must not deliver anything again
            assert seen == dict.fromkeys(committed + queued, 1), seen
            outer.cancel_scope.cancel()
        r.close()


# --- timeouts -------------------------------------------------------------------------------

HEADER_S = 1.0
BODY_S = 1.0
KEEPALIVE_S = 2.0


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster whose webapp times out in seconds, so the tests need not wait long."""
    with private_cluster(tmp_path_factory.mktemp("timeouts"), http_header_timeout_s=HEADER_S,
                         http_body_timeout_s=BODY_S,
                         http_keepalive_timeout_s=KEEPALIVE_S) as c:
        yield c


async def connect(c: Cluster) -> trio.SocketStream:
    addr = httpx.URL(c.root)
    return await trio.open_tcp_stream(addr.host, addr.port or 80)


async def until_closed(stream: trio.SocketStream, limit: float) -> tuple[float, bytes]:
    """Read until the server closes; returns (seconds it took, bytes received)."""
    start = trio.current_time()
    got = b""
    with trio.fail_after(limit):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # a reset is a close too
                chunk = b""
            if not chunk:
                return trio.current_time() - start, got
            got += chunk


async def trickle(stream: trio.SocketStream, data: bytes, every: float) -> None:
    """One byte at a time, until the server stops taking them."""
    for i in range(len(data)):
        try:
            await stream.send_all(data[i:i + 1])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        await trio.sleep(every)


async def test_slow_headers_are_cut_off(fast: Cluster) -> None:
    stream = await connect(fast)
    head = b"POST /api/api.test HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(trickle, stream, head, 0.1)  # never completes the headers
        took, got = await until_closed(stream, HEADER_S + 5)
        nursery.cancel_scope.cancel()
    assert got == b""
    assert HEADER_S * 0.9 <= took <= HEADER_S + 2, took


async def test_silent_connection_is_cut_off(fast: Cluster) -> None:
    stream = await connect(fast)
    async with stream:
        took, got = await until_closed(stream, HEADER_S + 5)
    assert got == b"" and took <= HEADER_S + 2, took


async def test_idle_keep_alive_connection_is_closed(fast: Cluster) -> None:
    stream = await connect(fast)
    async with stream:
        await stream.send_all(b"GET /api/api.test?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            got = b""
            while not got.endswith(b"}"):  # the whole JSON reply: the request is done
                got += await stream.receive_some(65536)
        assert got.startswith(b"HTTP/1.1 200") and b'"ok":true' in got.replace(b" ", b"")
        took, rest = await until_closed(stream, KEEPALIVE_S + 5)
    assert rest == b""
    assert KEEPALIVE_S * 0.9 <= took <= KEEPALIVE_S + 2, took


async def test_trickled_body_is_cut_off_with_408(fast: Cluster) -> None:
    ws = await trio.to_thread.run_sync(fast.seed, 1)
    user, channel = ws["users"][0], ws["channels"][0]["id"]
    body = (f'{{"channel":"{channel}","text":"never","client_msg_id":"slow-body"}}').encode()
    head = (f"POST /api/chat.postMessage HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {user['token']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    stream = await connect(fast)
    async with stream, trio.open_nursery() as nursery:
        await stream.send_all(head)
        nursery.start_soon(trickle, stream, body, 0.1)
        took, got = await until_closed(stream, BODY_S + 5)
        nursery.cancel_scope.cancel()
    assert got.startswith(b"HTTP/1.1 408"), got
    assert got.endswith(b'{"ok":false,"error":"request_timeout"}'), got
    assert BODY_S * 0.9 <= took <= BODY_S + 2, took
    assert await trio.to_thread.run_sync(history_cmids, fast, user["token"], channel) == {}


def test_timeouts_leave_normal_clients_alone(fast: Cluster) -> None:
    """slack_sdk and a pooled httpx client (as the real-time tier uses) still work."""
    ws = fast.seed(1)
    web = WebClient(token=ws["users"][0]["token"], base_url=fast.api)
    assert web.auth_test()["ok"]
    with httpx.Client(timeout=5) as http:
        for _ in range(3):
            assert http.post(fast.api + "api.test").json()["ok"]
            time.sleep(0.5)


# --- HEAD -------------------------------------------------------------------------------------


def test_head_never_runs_a_method(cluster: Cluster) -> None:
    ws = cluster.seed(1)
    user, channel = ws["users"][0], ws["channels"][0]["id"]
    before = history_cmids(cluster, user["token"], channel)
    resp = httpx.head(cluster.api + "chat.postMessage", params={
        "token": user["token"], "channel": channel, "text": "by HEAD", "client_msg_id": "head"})
    assert resp.status_code == 405 and resp.content == b""
    assert set(resp.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    internal = httpx.head(cluster.root + "/internal/events", headers=cluster.internal_headers(),
                          params={"stream": channel, "after_seq": 0})
    assert internal.status_code == 405
    assert history_cmids(cluster, user["token"], channel) == before
    assert httpx.head(cluster.root + "/health").status_code == 200
    # GET still runs methods, as Slack's Web API does
    got = httpx.get(cluster.api + "chat.postMessage", params={
        "token": user["token"], "channel": channel, "text": "by GET", "client_msg_id": "get"})
    assert got.json()["ok"]
    assert history_cmids(cluster, user["token"], channel)["get"] == 1
