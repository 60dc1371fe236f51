"""RTM resume through the real path (docs/rtm.md): clients of a gateway killed with -9
reconnect elsewhere and resume, a storm of 1,000 dropped sockets resumes, and bad
``resume`` input is refused or answered with ``resume_failed`` without leaking anything.

Every client is an ``ops.resumer.ResumingClient``: it checks per stream that each seq is
the last + 1, and counts message texts against every post that answered ok. Resume times
are printed (see `backchannel resume-bench`), never asserted: timing belongs to benchmarks.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import resource
import signal
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from ops import loadcheck
from ops.resumer import ResumingClient, start_all, totals
from tests.conftest import Cluster, private_cluster

GENERAL = 0  # index of #general in a seeded workspace's channels


def raise_fd_limit(wanted: int) -> None:
    """Each client holds a socket (and the shared HTTP pool more): lift the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def shared_http() -> httpx.AsyncClient:
    # hundreds of clients reconnect at once: queue for a connection rather than time out
    return httpx.AsyncClient(timeout=httpx.Timeout(30, pool=None),
                             limits=httpx.Limits(max_connections=100))


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``pred`` until true; the seconds it took. Fails the test after ``timeout``."""
    started = time.monotonic()
    try:
        with trio.fail_after(timeout):
            while not pred():
                await trio.sleep(0.02)
    except trio.TooSlowError:
        raise AssertionError(f"not within {timeout} s: {what}") from None
    return time.monotonic() - started


async def call(http: httpx.AsyncClient, c: Cluster, method: str, token: str,
               **body: Any) -> dict[str, Any]:
    reply = (await http.post(c.api + method, json=body,
                             headers={"Authorization": f"Bearer {token}"})).json()
    return reply


async def make_rooms(http: httpx.AsyncClient, c: Cluster, ws: dict[str, Any],
                     count: int) -> list[str]:
    """#general plus ``count`` channels created by the first user, everyone joined."""
    owner = ws["users"][0]["token"]
    rooms = [ws["channels"][GENERAL]["id"]]
    for i in range(count):
        reply = await call(http, c, "conversations.create", owner, name=f"room-{i}")
        assert reply["ok"], reply
        rooms.append(reply["channel"]["id"])
    limit = trio.Semaphore(20)

    async def join(token: str, room: str) -> None:
        async with limit:
            assert (await call(http, c, "conversations.join", token, channel=room))["ok"]

    async with trio.open_nursery() as nursery:
        for user in ws["users"][1:]:
            for room in rooms[1:]:
                nursery.start_soon(join, user["token"], room)
    return rooms


def assert_exact(clients: list[ResumingClient], load: loadcheck.Poster) -> dict[str, int]:
    """Per client and stream: nothing lost, nothing twice, nothing out of order, no
    resume_failed; and every acked post seen exactly once, by ts and by text."""
    for client in clients:
        counts = client.counts()
        bad = {k: counts[k] for k in ("lost", "duplicated", "reordered", "resume_failed",
                                      "leaked", "position_mismatch") if counts[k]}
        if bad:
            print(json.dumps({"bad": bad, "resume_failed": client.resume_failed[:3],
                              "anomalies": client.anomalies[:10],
                              "sessions": [dataclasses.asdict(s) for s in client.sessions]},
                             default=str))
        assert not bad, (client.member.token, bad)
    report = load.report([c.member for c in clients])
    counts = report.counts()
    assert counts["lost"] == counts["duplicated"] == counts["reordered"] == 0, counts
    texts = report.text_counts()
    assert texts == {"texts_missing": 0, "texts_repeated": 0}, texts
    assert load.failed == 0 and counts["delivered"] > 0, counts
    return {**counts, **totals(clients)}


def seconds_after(t: float, clients: list[ResumingClient]) -> dict[str, float]:
    hello = [s.hello_at - t for c in clients if (s := c.hello_after(t)) and s.hello_at]
    live = [s.live_at - t for c in clients if (s := c.resumed_after(t)) and s.live_at]
    return {"hello_p50": round(statistics.median(hello), 3), "hello_max": round(max(hello), 3),
            "resumed_p50": round(statistics.median(live), 3),
            "resumed_max": round(max(live), 3)}


async def settle(clients: list[ResumingClient], load: loadcheck.Poster) -> None:
    members = [c.member for c in clients]
    await wait_until(lambda: all(loadcheck.complete(m, load.acked) for m in members), 60,
                     "every client has every acked post")


# --- gateway kill -9 --------------------------------------------------------------------

async def test_kill_9_of_a_gateway_with_100_resuming_clients_under_load(tmp_path):
    with private_cluster(tmp_path, channels=2, gateways=2) as c:
        ws = await trio.to_thread.run_sync(c.seed, 111)
        victim, survivor = c.processes("gateway_server")
        async with shared_http() as http:
            rooms = await make_rooms(http, c, ws, 2)
            clients = [ResumingClient(c.api, u["token"], http=http, prefix="kill",
                                      pin=(victim if i < 100 else survivor)["url"])
                       for i, u in enumerate(ws["users"][1:])]
            on_victim, on_survivor = clients[:100], clients[100:]
            load = loadcheck.Poster(http, c.api, ws["users"][0]["token"], rooms, "kill")
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                with trio.fail_after(120):
                    await start_all(nursery, clients)
                async with trio.open_nursery() as posting:
                    posting.start_soon(load.run, 50.0, lambda i: not stop.is_set())
                    await wait_until(lambda: load.sent >= 50, 10, "a second of load")
                    killed_at = time.monotonic()
                    os.kill(victim["pid"], signal.SIGKILL)
                    await wait_until(lambda: all(cl.resumed_after(killed_at)
                                                 for cl in on_victim), 60,
                                     "every client of the killed gateway resumed")
                    resumed_at = load.sent
                    await wait_until(lambda: load.sent >= resumed_at + 50, 10, "more load")
                    stop.set()
                await settle(clients, load)
                nursery.cancel_scope.cancel()
        survivor_at = survivor["url"].removeprefix("ws://")
        for client in on_victim:
            assert client.resumed_after(killed_at).gateway == survivor_at  # type: ignore[union-attr]
        assert all(len(cl.sessions) == 1 for cl in on_survivor), "survivors never dropped"
        counts = assert_exact(clients, load)
        print(f"kill -9 of a gateway with {len(on_victim)} resuming clients, "
              f"{load.sent} posts: {counts}; seconds after the kill: "
              f"{seconds_after(killed_at, on_victim)}")


# --- disconnect storm ------------------------------------------------------------------

async def test_disconnect_storm_of_1000_clients_resumes_exactly(cluster):
    raise_fd_limit(4096)
    ws = await trio.to_thread.run_sync(cluster.seed, 1001)
    general = ws["channels"][GENERAL]["id"]
    async with shared_http() as http:
        clients = [ResumingClient(cluster.api, u["token"], http=http, prefix="storm")
                   for u in ws["users"][1:]]
        load = loadcheck.Poster(http, cluster.api, ws["users"][0]["token"], [general], "storm")
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            with trio.fail_after(120):
                await start_all(nursery, clients)
            async with trio.open_nursery() as posting:
                posting.start_soon(load.run, 2.0, lambda i: not stop.is_set())
                await wait_until(lambda: load.sent >= 2, 10, "a second of load")
                dropped_at = time.monotonic()
                async with trio.open_nursery() as dropping:  # all in one scheduler pass
                    for client in clients:
                        dropping.start_soon(client.drop)
                await wait_until(lambda: all(cl.resumed_after(dropped_at) for cl in clients),
                                 180, "every dropped client resumed")
                resumed_at = load.sent
                await wait_until(lambda: load.sent >= resumed_at + 2, 10, "more load")
                stop.set()
            await settle(clients, load)
            nursery.cancel_scope.cancel()
    assert all(any(s.close == "dropped" for s in cl.sessions) for cl in clients)
    counts = assert_exact(clients, load)
    closes = collections.Counter(s.close for cl in clients for s in cl.sessions)
    print(f"storm: {len(clients)} clients dropped at once, {load.sent} posts: {counts}; "
          f"seconds after the drop: {seconds_after(dropped_at, clients)}; sessions ended "
          f"by: {dict(closes)}")


# --- bad resume input ------------------------------------------------------------------

async def test_malformed_resume_is_invalid_arguments_in_json_form_and_query(cluster):
    ws = cluster.seed(1)
    token = ws["users"][0]["token"]
    auth = {"Authorization": f"Bearer {token}"}
    huge = {f"C{i:010d}": 1 for i in range(5001)}
    bad_values: list[Any] = ["{not json", "[1, 2]", [1, 2], 5, "5", True, "{\"C1\": NaN}",
                             {"": 1}, {"C" * 33: 1}, huge, json.dumps(huge)]
    async with httpx.AsyncClient(timeout=30) as http:
        for value in bad_values:
            reply = await http.post(cluster.api + "rtm.connect", json={"resume": value},
                                    headers=auth)
            assert reply.status_code == 200
            assert reply.json() == {"ok": False, "error": "invalid_arguments"}, str(value)[:80]
        for text in ("{not json", "[1]", "\"C1\"", '{"": 0}', json.dumps(huge)):
            replies = [await http.post(cluster.api + "rtm.connect", data={"resume": text},
                                       headers=auth)]
            if len(text) < 1000:  # a huge map does not fit in a request line
                replies.append(await http.get(cluster.api + "rtm.connect",
                                              params={"resume": text}, headers=auth))
            for reply in replies:
                assert reply.json() == {"ok": False, "error": "invalid_arguments"}, text[:80]
        # the limits themselves are allowed
        edge = {**{f"C{i:010d}": 1 for i in range(4999)}, "C" * 32: 0}
        assert (await http.post(cluster.api + "rtm.connect", json={"resume": edge},
                                headers=auth)).json()["ok"]


async def test_resume_as_a_json_string_in_form_and_query_params(cluster):
    """The documented spellings other than a JSON body: each resumes exactly."""
    ws = cluster.seed(2)
    general = ws["channels"][GENERAL]["id"]
    poster, user = ws["users"][0]["token"], ws["users"][1]["token"]
    async with httpx.AsyncClient(timeout=10) as http:
        client = ResumingClient(cluster.api, user, http=http)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            nursery.cancel_scope.cancel()
        at = client.positions()
        sent = [(await call(http, cluster, "chat.postMessage", poster, channel=general,
                            text=f"missed {i}"))["ts"] for i in range(3)]
        auth = {"Authorization": f"Bearer {user}"}
        for how in ("form", "query", "json-string"):
            if how == "form":
                reply = await http.post(cluster.api + "rtm.connect", headers=auth,
                                        data={"resume": json.dumps(at)})
            elif how == "query":
                reply = await http.get(cluster.api + "rtm.connect", headers=auth,
                                       params={"resume": json.dumps(at)})
            else:
                reply = await http.post(cluster.api + "rtm.connect", headers=auth,
                                        json={"resume": json.dumps(at)})
            doc = reply.json()
            assert doc["ok"], (how, doc)
            async with open_websocket_url(doc["url"]) as sock:
                hello = json.loads(await sock.get_message())
                assert hello == {"type": "hello", "positions": at}, (how, hello)
                got = []
                with trio.fail_after(10):
                    while len(got) < 3:
                        event = json.loads(await sock.get_message())
                        if event.get("type") == "message":
                            got.append((event["ts"], event["seq"]))
                assert got == [(ts, at[general] + i + 1) for i, ts in enumerate(sent)], how


async def test_streams_without_access_fail_with_no_access_and_never_leak(cluster):
    """Another workspace's channel and personal stream, a channel that does not exist, and a
    private channel of the user's own workspace it is not in: ``resume_failed`` no_access
    (no seq), and posts made there afterwards never reach the client."""
    mine, theirs = cluster.seed(2), cluster.seed(2)
    owner, me = mine["users"][0], mine["users"][1]
    async with httpx.AsyncClient(timeout=10) as http:
        secret = (await call(http, cluster, "conversations.create", owner["token"],
                             name="secret", is_private=True))["channel"]["id"]
        foreign = [theirs["channels"][GENERAL]["id"], theirs["users"][0]["id"]]
        refused = {*foreign, secret, "C0NOSUCHONE"}
        client = ResumingClient(cluster.api, me["token"], http=http, prefix="",
                                resume=dict.fromkeys(refused, 0), keep_events=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            gateway = "ws://" + client.sessions[-1].gateway
            await wait_until(lambda: len(client.resume_failed) >= len(refused), 10,
                             "a resume_failed per refused stream")
            assert sorted(client.resume_failed, key=lambda e: e["stream"]) == [
                {"type": "resume_failed", "stream": s, "reason": "no_access"}
                for s in sorted(refused)]
            assert not refused & set(client.sessions[-1].positions)
            # witnesses on the same gateway: once they have the post, it was fanned out there
            witnesses = [ResumingClient(cluster.api, u["token"], http=http,
                                        pin=gateway, prefix="leak")
                         for u in (theirs["users"][1], owner)]
            for w in witnesses:
                await nursery.start(w.run)
            for token, channel in ((theirs["users"][0]["token"], foreign[0]),
                                   (owner["token"], secret)):
                assert (await call(http, cluster, "chat.postMessage", token, channel=channel,
                                   text="leak?"))["ok"]
            marker = await call(http, cluster, "chat.postMessage", owner["token"],
                                channel=mine["channels"][GENERAL]["id"], text="marker")
            await wait_until(lambda: all(w.member.got for w in witnesses)
                             and any(e.get("ts") == marker["ts"] for e in client.events or []),
                             10, "witnesses got the posts, the client the marker")
            nursery.cancel_scope.cancel()
    assert client.leaked == []
    assert not refused & {e.get("stream") for e in client.events or []}
    assert not refused & {channel_of(e) for e in client.frames + (client.events or [])}
    assert client.counts()["lost"] == client.counts()["duplicated"] == 0


async def test_bad_positions_are_invalid_position_then_live_from_seq(cluster):
    """Negative, future and non-integer positions: ``invalid_position`` with the live
    ``seq``, then the stream goes on from there with nothing skipped after it."""
    ws = cluster.seed(2)
    general = ws["channels"][GENERAL]["id"]
    poster, user = ws["users"][0]["token"], ws["users"][1]["token"]
    bad: list[Any] = [-1, 10**9, 2**62, 10**30, 1.5, "3", True, None, [], {"x": 1}]
    async with httpx.AsyncClient(timeout=10) as http:
        head = (await call(http, cluster, "chat.postMessage", poster, channel=general,
                           text="before"))
        assert head["ok"]
        clients = [ResumingClient(cluster.api, user, http=http, prefix="live",
                                  resume={general: value}, keep_events=True) for value in bad]
        async with trio.open_nursery() as nursery:
            await start_all(nursery, clients)
            await wait_until(lambda: all(c.resume_failed for c in clients), 10,
                             "resume_failed on every client")
            after = await call(http, cluster, "chat.postMessage", poster, channel=general,
                               text="live 1")
            await wait_until(lambda: all(c.member.got.get(general) for c in clients), 10,
                             "the live post on every client")
            nursery.cancel_scope.cancel()
    for value, client in zip(bad, clients, strict=True):
        failed = client.resume_failed
        assert len(failed) == 1 and failed[0]["stream"] == general, (value, failed)
        assert failed[0]["reason"] == "invalid_position", (value, failed)
        live = next(e for e in client.events or [] if e.get("ts") == after["ts"])
        assert live["seq"] == failed[0]["seq"] + 1, (value, failed, live)
        assert [e["text"] for e in client.events or [] if e.get("channel") == general
                and e.get("type") == "message"] == ["live 1"], value
        counts = client.counts()
        assert counts["lost"] == counts["duplicated"] == counts["reordered"] == 0, value


async def test_channel_joined_while_away_is_replayed_from_the_membership_start(cluster):
    ws = cluster.seed(2)
    owner, me = ws["users"][0], ws["users"][1]
    async with httpx.AsyncClient(timeout=10) as http:
        room = (await call(http, cluster, "conversations.create", owner["token"],
                           name="joined-away"))["channel"]["id"]
        assert (await call(http, cluster, "chat.postMessage", owner["token"], channel=room,
                           text="before join"))["ok"]
        client = ResumingClient(cluster.api, me["token"], http=http, keep_events=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            nursery.cancel_scope.cancel()
        assert room not in client.positions()
        assert (await call(http, cluster, "conversations.join", me["token"],
                           channel=room))["ok"]
        for i in range(2):
            assert (await call(http, cluster, "chat.postMessage", owner["token"], channel=room,
                               text=f"after join {i}"))["ok"]
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            await wait_until(lambda: len(client.member.got.get(room, [])) == 2, 10,
                             "both posts made after the join")
            nursery.cancel_scope.cancel()
    on_room = [e for e in client.events or [] if e.get("stream") == room]
    assert on_room[0]["type"] == "member_joined_channel" and on_room[0]["user"] == me["id"]
    assert [e.get("text") for e in on_room[1:]] == ["after join 0", "after join 1"]
    assert client.sessions[-1].positions[room] == on_room[0]["seq"] - 1
    assert any(e.get("type") == "channel_joined" and e["channel"]["id"] == room
               for e in client.events or [] if e.get("stream") == me["id"])
    counts = client.counts()
    assert counts["lost"] == counts["duplicated"] == counts["resume_failed"] == 0, counts


def channel_of(event: dict[str, Any]) -> str | None:
    channel = event.get("channel")
    return channel.get("id") if isinstance(channel, dict) else channel


def purge_event_log(c: Cluster, before_us: int) -> int:
    from webapp import store
    from webapp.db import Database

    async def run() -> int:
        db = Database(c.settings)
        await db.open()
        try:
            return await store.purge_events(db, before_us)
        finally:
            await db.close()

    return asyncio.run(run())


async def test_position_older_than_the_event_log_is_too_old_then_live(tmp_path):
    """A private cluster: the purge empties the whole event log."""
    with private_cluster(tmp_path, channels=1, gateways=1) as c:
        ws = await trio.to_thread.run_sync(c.seed, 2)
        general = ws["channels"][GENERAL]["id"]
        poster, user = ws["users"][0]["token"], ws["users"][1]["token"]
        async with httpx.AsyncClient(timeout=10) as http:
            client = ResumingClient(c.api, user, http=http, prefix="", keep_events=True)
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                nursery.cancel_scope.cancel()
            at = client.positions()[general]
            for i in range(3):
                assert (await call(http, c, "chat.postMessage", poster, channel=general,
                                   text=f"purged {i}"))["ok"]
            gone = await trio.to_thread.run_sync(purge_event_log, c, int(time.time() * 1e6))
            assert gone >= 3
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                await wait_until(lambda: client.resume_failed, 10, "resume_failed")
                after = await call(http, c, "chat.postMessage", poster, channel=general,
                                   text="live")
                await wait_until(lambda: client.member.got.get(general), 10, "the live post")
                nursery.cancel_scope.cancel()
    assert client.resume_failed == [{"type": "resume_failed", "stream": general,
                                     "reason": "too_old", "seq": at + 3}]
    live = [e for e in client.events or [] if e.get("type") == "message"]
    assert [(e["text"], e["seq"], e["ts"]) for e in live] == [("live", at + 4, after["ts"])]
    counts = client.counts()
    assert counts["lost"] == counts["duplicated"] == 0 and counts["skipped"] == 3, counts
