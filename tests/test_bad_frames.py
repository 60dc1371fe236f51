"""Bad input on the internal HTTP surfaces and the WebSockets: the gateway's RTM stream and
the channel servers' links. Every case is refused with a clear error (or the link is closed),
nothing is written or delivered, and every process stays healthy."""

from __future__ import annotations

import json
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pymysql
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from tests.conftest import Cluster, private_cluster

JSON = {"content-type": "application/json"}
WRONG_SECRETS: list[dict[str, str]] = [
    {},
    {"x-backchannel-internal": ""},
    {"x-backchannel-internal": "not-the-secret"},
]
WAIT_S = 5
REFUSED = {"ok": False, "error": "invalid_arguments"}


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def call(http: httpx.AsyncClient, cluster: Any, method: str, token: str,
               **body: Any) -> dict[str, Any]:
    resp = await http.post(cluster.api + method, json=body,
                           headers={"authorization": f"Bearer {token}"})
    doc = resp.json()
    assert resp.status_code == 200 and doc["ok"] is True, doc
    return doc


async def event_log(http: httpx.AsyncClient, cluster: Any, stream: str) -> list[dict[str, Any]]:
    resp = await http.get(cluster.root + "/internal/events",
                          params={"stream": stream, "after_seq": 0, "limit": 1000},
                          headers=cluster.internal_headers())
    doc = resp.json()
    assert resp.status_code == 200 and doc["ok"] is True, doc
    return doc["events"]


async def assert_all_healthy(http: httpx.AsyncClient, cluster: Any) -> None:
    for role in ("webapp", "admin_server", "channel_server", "gateway_server",
                 "presence_server"):
        procs = cluster.processes(role)
        assert procs, role
        for proc in procs:
            resp = await http.get(proc["http_url"] + "/health")
            assert resp.status_code == 200, (proc["name"], resp.text)
            assert resp.json()["ok"] is True


def body_of(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text[:100]


async def recv_json(ws: WebSocketConnection) -> Any:
    with trio.fail_after(WAIT_S):
        return json.loads(await ws.get_message())


async def until(ws: WebSocketConnection, pred: Callable[[Any], bool],
                seen: list[Any] | None = None) -> dict[str, Any]:
    """The first frame matching ``pred``; frames skipped on the way go to ``seen``."""
    with trio.fail_after(WAIT_S):
        while True:
            frame = json.loads(await ws.get_message())
            if pred(frame):
                return frame
            if seen is not None:
                seen.append(frame)


async def rtm_url(http: httpx.AsyncClient, cluster: Any, token: str) -> str:
    return (await call(http, cluster, "rtm.connect", token))["url"]


@asynccontextmanager
async def rtm(http: httpx.AsyncClient, cluster: Any, token: str
              ) -> AsyncIterator[WebSocketConnection]:
    """An RTM client past its ``hello``."""
    async with open_websocket_url(await rtm_url(http, cluster, token)) as ws:
        await until(ws, lambda f: f.get("type") == "hello")
        yield ws


async def assert_link_closed(ws: WebSocketConnection) -> None:
    """The server ends the connection: get_message raises ConnectionClosed."""
    with pytest.raises(ConnectionClosed), trio.fail_after(WAIT_S):
        while True:
            await ws.get_message()


async def first_message_is(ws: WebSocketConnection, channel: str, text: str) -> None:
    """The next message event in ``channel`` is the one with ``text`` (nothing injected)."""
    frame = await until(ws, lambda f: f.get("type") == "message" and f.get("channel") == channel)
    assert frame["text"] == text


def directory_counts(cluster: Any) -> dict[str, int]:
    s = cluster.settings
    conn = pymysql.connect(host=s.mysql_host, port=s.mysql_port, user=s.mysql_user,
                           password=s.mysql_password, database=s.db_name("directory"))
    try:
        with conn.cursor() as cur:
            counts = {}
            for table in ("teams", "users", "tokens", "channel_names"):
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                counts[table] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


# --- webapp internal endpoints -------------------------------------------------------------


@pytest.mark.parametrize("headers", WRONG_SECRETS, ids=["none", "empty", "wrong"])
async def test_webapp_internal_endpoints_refuse_without_secret(
    cluster: Any, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    ws = cluster.seed(2)
    user, general = ws["users"][0], ws["channels"][0]["id"]
    url = await rtm_url(http, cluster, user["token"])
    ticket = url.split("ticket=", 1)[1]
    log_before = await event_log(http, cluster, general)
    dir_before = await trio.to_thread.run_sync(directory_counts, cluster)

    attempts = [
        http.post(cluster.root + "/internal/rtm.redeem", json={"ticket": ticket},
                  headers=headers),
        http.get(cluster.root + "/internal/events",
                 params={"stream": general, "after_seq": 0}, headers=headers),
        http.post(cluster.root + "/internal/events",
                  json={"stream": general, "after_seq": 0}, headers=headers),
        http.post(cluster.root + "/internal/seed", json={"users": 3}, headers=headers),
        http.post(cluster.root + "/internal/heads", json={"streams": [general]},
                  headers=headers),
        http.post(cluster.root + "/internal/rtm.post",
                  json={"user": user["id"], "channel": general, "text": "forged"},
                  headers=headers),
        *[http.get(p["http_url"] + "/streams", headers=headers)
          for p in cluster.processes("channel_server")],
    ]
    for attempt in attempts:
        resp = await attempt
        assert resp.status_code == 403, resp.text
        assert resp.json() == {"ok": False, "error": "not_allowed"}

    assert await event_log(http, cluster, general) == log_before
    assert await trio.to_thread.run_sync(directory_counts, cluster) == dir_before
    # the refused redeem did not consume the ticket: it still opens a connection
    async with open_websocket_url(url) as conn:
        await until(conn, lambda f: f.get("type") == "hello")
    await assert_all_healthy(http, cluster)


@pytest.mark.parametrize(("path", "body", "error"), [
    pytest.param("/internal/events", b"{nope", "invalid_json", id="events-bad-json"),
    pytest.param("/internal/events", b"[" * 100_000 + b"]" * 100_000, "invalid_json",
                 id="events-deeply-nested"),
    pytest.param("/internal/events", b'{"stream":["C1"]}', "invalid_arguments",
                 id="events-stream-list"),
    pytest.param("/internal/rtm.redeem", b'{"ticket":["x"]}', "invalid_arguments",
                 id="redeem-ticket-list"),
    pytest.param("/internal/rtm.redeem", b"{}", "invalid_auth", id="redeem-no-ticket"),
    pytest.param("/internal/rtm.redeem", b'{"ticket":"bogus"}', "invalid_auth",
                 id="redeem-bogus-ticket"),
    pytest.param("/internal/rtm.redeem", b"[" * 100_000 + b"]" * 100_000, "invalid_json",
                 id="redeem-deeply-nested"),
    pytest.param("/internal/seed", b'{"users":"many"}', "invalid_arguments",
                 id="seed-users-string"),
    pytest.param("/internal/seed", b"[" * 100_000 + b"]" * 100_000, "invalid_json",
                 id="seed-deeply-nested"),
    pytest.param("/internal/rtm.post", b"{}", "invalid_auth", id="rtm-post-no-user"),
    pytest.param("/internal/rtm.post", b'{"user":["U1"]}', "invalid_arguments",
                 id="rtm-post-user-list"),
    pytest.param("/internal/rtm.post", b'{"user":"UNOSUCHUSER","channel":"C1","text":"x"}',
                 "invalid_auth", id="rtm-post-unknown-user"),
    pytest.param("/internal/rtm.post", b"[" * 100_000 + b"]" * 100_000, "invalid_json",
                 id="rtm-post-deeply-nested"),
    pytest.param("/internal/heads", b"{}", "invalid_arguments", id="heads-missing"),
    pytest.param("/internal/heads", b'{"streams":{"C1":1}}', "invalid_arguments",
                 id="heads-object"),
    pytest.param("/internal/heads", b'{"streams":["C1",7]}', "invalid_arguments",
                 id="heads-int-id"),
    pytest.param("/internal/heads", b'{"streams":[""]}', "invalid_arguments",
                 id="heads-empty-id"),
    pytest.param("/internal/heads", json.dumps({"streams": ["C" * 33]}).encode(),
                 "invalid_arguments", id="heads-id-too-long"),
    pytest.param("/internal/heads", json.dumps({"streams": [f"C{i}" for i in range(5001)]}
                                               ).encode(), "invalid_arguments",
                 id="heads-too-many"),
    pytest.param("/internal/heads", b"[" * 100_000 + b"]" * 100_000, "invalid_json",
                 id="heads-deeply-nested"),
    *[pytest.param("/internal/rtm.redeem", json.dumps({"tickets": bad}).encode(),
                   "invalid_arguments", id=f"redeem-tickets-{name}")
      for name, bad in (("string", "abc"), ("empty", []), ("int-item", ["abc", 7]),
                        ("empty-item", [""]), ("long-item", ["t" * 129]),
                        ("too-many", [f"t{i}" for i in range(501)]), ("object", {"a": 1}),
                        ("null", None))],
])
async def test_webapp_internal_endpoints_refuse_bad_bodies(
    cluster: Any, http: httpx.AsyncClient, path: str, body: bytes, error: str
) -> None:
    dir_before = await trio.to_thread.run_sync(directory_counts, cluster)
    resp = await http.post(cluster.root + path, content=body,
                           headers={**JSON, **cluster.internal_headers()})
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json() == {"ok": False, "error": error}
    assert await trio.to_thread.run_sync(directory_counts, cluster) == dir_before
    await assert_all_healthy(http, cluster)


# --- admin server --------------------------------------------------------------------------


def _fake_event(stream: str, seq: int, user: str) -> dict[str, Any]:
    return {"stream": stream, "seq": seq, "event": {
        "type": "message", "user": user, "text": "INJECTED", "ts": "1700000000.000001",
        "channel": stream, "event_ts": "1700000000.000001"}}


ADMIN_BAD_BODIES: list[tuple[str, Callable[[dict[str, Any]], bytes]]] = [
    ("not-json", lambda e: b"this is not json"),
    ("invalid-utf8", lambda e: b'{"events":[{"stream":"\xff"}]}'),
    ("deeply-nested", lambda e: b"[" * 100_000 + b"]" * 100_000),
    ("json-array", lambda e: json.dumps([e]).encode()),
    ("json-string", lambda e: b'"events"'),
    ("events-missing", lambda e: b"{}"),
    ("events-not-a-list", lambda e: json.dumps({"events": e}).encode()),
    ("events-empty", lambda e: b'{"events":[]}'),
    ("event-item-string", lambda e: b'{"events":["x"]}'),
    ("event-payload-string", lambda e: json.dumps(
        {"events": [{**e, "event": "message"}]}).encode()),
    ("seq-string", lambda e: json.dumps({"events": [{**e, "seq": str(e["seq"])}]}).encode()),
    ("seq-bool", lambda e: json.dumps({"events": [{**e, "seq": True}]}).encode()),
    ("seq-float", lambda e: json.dumps({"events": [{**e, "seq": e["seq"] + 0.5}]}).encode()),
    ("stream-int", lambda e: json.dumps({"events": [{**e, "stream": 7}]}).encode()),
    ("stream-missing", lambda e: json.dumps(
        {"events": [{k: v for k, v in e.items() if k != "stream"}]}).encode()),
    ("valid-then-invalid", lambda e: json.dumps(
        {"events": [e, {**e, "seq": "x"}]}).encode()),
    ("too-many-events", lambda e: json.dumps({"events": [e] * 1001}).encode()),
]


async def test_admin_notify_refuses_bad_input(cluster: Any, http: httpx.AsyncClient) -> None:
    ws = cluster.seed(2)
    user, general = ws["users"][0], ws["channels"][0]["id"]
    admins = cluster.processes("admin_server")
    async with rtm(http, cluster, user["token"]) as conn:
        log_before = await event_log(http, cluster, general)
        # shaped exactly like the webapp's notify, with the seq the next real post will get:
        # if any of these got through, the real post would be dropped as a duplicate
        fake = _fake_event(general, log_before[-1]["seq"] + 1, user["id"])
        for admin in admins:
            for headers in WRONG_SECRETS:
                resp = await http.post(admin["http_url"] + "/notify",
                                       json={"events": [fake]}, headers=headers)
                assert resp.status_code == 403, resp.text
                assert resp.json() == {"ok": False, "error": "not_allowed"}
            wrong = []
            for name, body in ADMIN_BAD_BODIES:
                resp = await http.post(admin["http_url"] + "/notify", content=body(fake),
                                       headers={**JSON, **cluster.internal_headers()})
                if (resp.status_code, body_of(resp)) != (400, REFUSED):
                    wrong.append((name, resp.status_code, resp.text[:100]))
            assert not wrong, wrong
        assert await event_log(http, cluster, general) == log_before
        await assert_all_healthy(http, cluster)
        posted = await call(http, cluster, "chat.postMessage", user["token"], channel=general,
                            text="real after bad notify")
        await first_message_is(conn, general, "real after bad notify")
        log_after = await event_log(http, cluster, general)
        assert [e["seq"] for e in log_after] == [e["seq"] for e in log_before] + [fake["seq"]]
        assert log_after[-1]["event"]["ts"] == posted["ts"]


# --- presence server -----------------------------------------------------------------------


PRESENCE_BAD_BODIES: list[tuple[str, Callable[[str], bytes]]] = [
    ("not-json", lambda u: b"online!"),
    ("invalid-utf8", lambda u: b'{"gateway":"\xff","users":{}}'),
    ("deeply-nested", lambda u: b"[" * 100_000 + b"]" * 100_000),
    ("json-array", lambda u: json.dumps(["evil", {u: 1}]).encode()),
    ("json-string", lambda u: b'"evil"'),
    ("json-null", lambda u: b"null"),
    ("users-missing", lambda u: b'{"gateway":"evil"}'),
    ("gateway-missing", lambda u: json.dumps({"users": {u: 1}}).encode()),
    ("gateway-int", lambda u: json.dumps({"gateway": 1, "users": {u: 1}}).encode()),
    ("users-list", lambda u: json.dumps({"gateway": "evil", "users": [u]}).encode()),
    ("count-negative", lambda u: json.dumps({"gateway": "evil", "users": {u: -1}}).encode()),
    ("count-string", lambda u: json.dumps({"gateway": "evil", "users": {u: "1"}}).encode()),
    ("count-float", lambda u: json.dumps({"gateway": "evil", "users": {u: 1.0}}).encode()),
    ("count-bool", lambda u: json.dumps({"gateway": "evil", "users": {u: True}}).encode()),
    ("one-bad-count", lambda u: json.dumps(
        {"gateway": "evil", "users": {u: 1, "U0THER": None}}).encode()),
]


async def test_presence_server_refuses_bad_input(cluster: Any, http: httpx.AsyncClient) -> None:
    ws = cluster.seed(2)
    asker, target = ws["users"][0], ws["users"][1]  # target never connects

    async def target_presence() -> dict[str, Any]:
        doc = await call(http, cluster, "users.getPresence", asker["token"], user=target["id"])
        return {k: doc[k] for k in ("presence", "online", "connection_count")}

    offline = {"presence": "away", "online": False, "connection_count": 0}
    assert await target_presence() == offline
    for proc in cluster.processes("presence_server"):
        base = proc["http_url"]
        for headers in WRONG_SECRETS:
            resp = await http.post(base + "/sync", headers=headers,
                                   json={"gateway": "evil", "users": {target["id"]: 1}})
            assert resp.status_code == 403, resp.text
            assert resp.json() == {"ok": False, "error": "not_allowed"}
            resp = await http.get(base + "/presence", params={"user": target["id"]},
                                  headers=headers)
            assert resp.status_code == 403, resp.text
            assert resp.json() == {"ok": False, "error": "not_allowed"}
        wrong = []
        for name, body in PRESENCE_BAD_BODIES:
            resp = await http.post(base + "/sync", content=body(target["id"]),
                                   headers={**JSON, **cluster.internal_headers()})
            if (resp.status_code, body_of(resp)) != (400, REFUSED):
                wrong.append((name, resp.status_code, resp.text[:100]))
        assert not wrong, wrong
        resp = await http.get(base + "/presence", params={"user": target["id"]},
                              headers=cluster.internal_headers())
        assert resp.status_code == 200 and resp.json()["ok"] is True
    assert await target_presence() == offline
    await assert_all_healthy(http, cluster)


# --- gateway: handshake --------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?ticket=", "?ticket=bogus-ticket",
                                   "?ticket=" + "x" * 200, "?ticket=%ff%00"],
                         ids=["no-ticket", "empty", "bogus", "too-long", "garbage"])
async def test_gateway_rejects_connection_without_valid_ticket(
    cluster: Any, http: httpx.AsyncClient, query: str
) -> None:
    for gateway in cluster.processes("gateway_server"):
        with pytest.raises(ConnectionRejected) as info, trio.fail_after(WAIT_S):
            async with open_websocket_url(gateway["url"] + "/rtm" + query):
                pass
        assert info.value.status_code == 401
        assert json.loads(info.value.body) == {"ok": False, "error": "invalid_auth"}
    await assert_all_healthy(http, cluster)


async def test_gateway_ticket_is_single_use(cluster: Any, http: httpx.AsyncClient) -> None:
    ws = cluster.seed(1)
    url = await rtm_url(http, cluster, ws["users"][0]["token"])
    async with open_websocket_url(url) as conn:
        await until(conn, lambda f: f.get("type") == "hello")
        with pytest.raises(ConnectionRejected) as info, trio.fail_after(WAIT_S):
            async with open_websocket_url(url):
                pass
        assert info.value.status_code == 401
        # the first connection is unaffected by the replay
        await conn.send_message(json.dumps({"type": "ping", "id": 1}))
        assert await until(conn, lambda f: f.get("type") == "pong") == {
            "type": "pong", "reply_to": 1}
    await assert_all_healthy(http, cluster)


# --- gateway: frames after hello -----------------------------------------------------------


async def test_gateway_answers_bad_frames_with_errors_and_stays_usable(
    cluster: Any, http: httpx.AsyncClient
) -> None:
    ws = cluster.seed(2)
    owner, outsider = ws["users"][0], ws["users"][1]
    general = ws["channels"][0]["id"]
    secret_room = (await call(http, cluster, "conversations.create", owner["token"],
                              name="room-" + secrets.token_hex(4)))["channel"]["id"]
    async with rtm(http, cluster, owner["token"]) as watcher, \
            rtm(http, cluster, outsider["token"]) as conn:
        logs_before = {s: await event_log(http, cluster, s) for s in (general, secret_room)}
        cases: list[tuple[str | bytes, dict[str, Any]]] = [
            ("this is not json", {"type": "error", "error": {"code": 1, "msg": "invalid json"}}),
            ("[1, 2, 3]", {"type": "error", "error": {"code": 1, "msg": "invalid json"}}),
            ("[" * 5_000 + "]" * 5_000,
             {"type": "error", "error": {"code": 1, "msg": "invalid json"}}),
            (b"\xff\xfe\x00garbage",
             {"type": "error", "error": {"code": 1, "msg": "invalid json"}}),
            ('{"id": 3}', {"type": "error", "reply_to": 3, "ok": False,
                           "error": {"code": 2, "msg": "unsupported message type"}}),
            ('{"type": "no_such_type", "id": 4}',
             {"type": "error", "reply_to": 4, "ok": False,
              "error": {"code": 2, "msg": "unsupported message type"}}),
            (json.dumps({"type": "message", "id": 6, "channel": secret_room, "text": "hi"}),
             {"ok": False, "reply_to": 6, "error": {"code": 2, "msg": "not_in_channel"}}),
            (json.dumps({"type": "typing", "id": 7, "channel": secret_room}),
             {"type": "error", "reply_to": 7, "ok": False,
              "error": {"code": 3, "msg": "channel_not_found"}}),
            (json.dumps({"type": "typing", "id": 8, "channel": ["C1"]}),
             {"type": "error", "reply_to": 8, "ok": False,
              "error": {"code": 3, "msg": "channel_not_found"}}),
        ]
        for sent, expected in cases:
            await conn.send_message(sent)
            assert await recv_json(conn) == expected, sent[:40]
            await conn.send_message(json.dumps({"type": "ping", "id": 5}))
            assert await recv_json(conn) == {"type": "pong", "reply_to": 5}

        assert {s: await event_log(http, cluster, s) for s in logs_before} == logs_before
        # the refused typing never reached the room's member: the next thing the watcher sees
        # in that room is a real post, with no user_typing before it
        await call(http, cluster, "chat.postMessage", owner["token"], channel=secret_room,
                   text="after the bad frames")
        seen: list[Any] = []
        frame = await until(watcher, lambda f: f.get("type") == "message"
                            and f.get("channel") == secret_room, seen)
        assert frame["text"] == "after the bad frames"
        assert [f for f in seen if f.get("type") == "user_typing"] == []
    await assert_all_healthy(http, cluster)


async def test_gateway_closes_oversized_frame_and_stays_healthy(
    cluster: Any, http: httpx.AsyncClient
) -> None:
    ws = cluster.seed(1)
    user, general = ws["users"][0], ws["channels"][0]["id"]
    log_before = await event_log(http, cluster, general)
    async with rtm(http, cluster, user["token"]) as conn:
        big = json.dumps({"type": "ping", "id": 1, "pad": "x" * (16 * 1024)})
        await conn.send_message(big)
        await assert_link_closed(conn)
    assert await event_log(http, cluster, general) == log_before
    await assert_all_healthy(http, cluster)
    async with rtm(http, cluster, user["token"]) as again:
        await again.send_message(json.dumps({"type": "ping", "id": 5}))
        assert await until(again, lambda f: f.get("type") == "pong") == {
            "type": "pong", "reply_to": 5}
        await call(http, cluster, "chat.postMessage", user["token"], channel=general,
                   text="after the big frame")
        await first_message_is(again, general, "after the big frame")


# --- channel server links ------------------------------------------------------------------


def _channel_link_garbage(stream: str, seq: int, secret: str
                          ) -> list[tuple[str, list[str | bytes]]]:
    good = {"type": "event", "id": 1, "epoch": 0, "stream": stream, "seq": seq,
            "event": {"type": "message", "text": "INJECTED", "channel": stream,
                      "ts": "1700000000.000001"}}
    admin = json.dumps({"type": "hello", "role": "admin", "name": "evil", "secret": secret})
    gateway = json.dumps({"type": "hello", "role": "gateway", "name": "evil",
                          "secret": secret})
    return [
        # a well-formed event must still be refused from a peer without the cluster secret
        ("admin-no-secret", [json.dumps({"type": "hello", "role": "admin", "name": "evil"}),
                             json.dumps(good)]),
        ("admin-wrong-secret", [json.dumps({"type": "hello", "role": "admin", "name": "evil",
                                            "secret": "guess"}), json.dumps(good)]),
        ("admin-secret-not-string", [json.dumps({"type": "hello", "role": "admin",
                                                 "name": "evil", "secret": 1}),
                                     json.dumps(good)]),
        ("gateway-no-secret", [json.dumps({"type": "hello", "role": "gateway", "name": "evil"}),
                               json.dumps({"type": "subscribe", "id": 1, "epoch": 0,
                                           "streams": [stream]})]),
        ("not-json", ["garbage, not json"]),
        ("binary-garbage", [b"\xff\xfe\xfd"]),
        ("json-array", ['["hello"]']),
        ("untyped", ['{"role":"admin"}']),
        ("unknown-role", ['{"type":"hello","role":"nope"}']),
        ("role-not-string", ['{"type":"hello","role":1}']),
        ("gateway-without-name", ['{"type":"hello","role":"gateway"}']),
        ("admin-then-not-json", [admin, "{{{"]),
        ("admin-then-untyped", [admin, '{"id":1}']),
        ("admin-event-seq-string", [admin, json.dumps({**good, "seq": str(seq)})]),
        ("admin-event-stream-int", [admin, json.dumps({**good, "stream": 5})]),
        ("admin-event-payload-string", [admin, json.dumps({**good, "event": "x"})]),
        ("admin-event-id-string", [admin, json.dumps({**good, "id": "1"})]),
        ("admin-event-epoch-missing", [admin, json.dumps(
            {k: v for k, v in good.items() if k != "epoch"})]),
        ("gateway-subscribe-not-list", [gateway, json.dumps(
            {"type": "subscribe", "id": 1, "epoch": 0, "streams": stream})]),
        ("gateway-subscribe-bad-ids", [gateway, json.dumps(
            {"type": "subscribe", "id": 1, "epoch": 0, "streams": [stream, 7]})]),
        ("gateway-ephemeral-no-event", [gateway, json.dumps(
            {"type": "ephemeral", "stream": stream})]),
        ("gateway-after-not-object", [gateway, json.dumps(
            {"type": "subscribe", "id": 1, "epoch": 0, "streams": [stream], "after": [1]})]),
        ("gateway-after-seq-string", [gateway, json.dumps(
            {"type": "subscribe", "id": 1, "epoch": 0, "streams": [stream],
             "after": {stream: "1"}})]),
        ("gateway-after-seq-negative", [gateway, json.dumps(
            {"type": "subscribe", "id": 1, "epoch": 0, "streams": [stream],
             "after": {stream: -1}})]),
        ("gateway-after-seq-huge", [gateway, json.dumps(
            {"type": "subscribe", "id": 1, "epoch": 0, "streams": [stream],
             "after": {stream: 2**70}})]),
        ("gateway-after-seq-bool", [gateway, json.dumps(
            {"type": "subscribe", "id": 1, "epoch": 0, "streams": [stream],
             "after": {stream: True}})]),
        *[(f"gateway-replay-{name}", [gateway, json.dumps(
            {"type": "replay", "id": 1, "stream": stream, "after": 0, "upto": 5, **bad})])
          for name, bad in (("id-string", {"id": "1"}), ("no-stream", {"stream": None}),
                            ("empty-stream", {"stream": ""}), ("long-stream", {"stream": "C" * 65}),
                            ("after-negative", {"after": -1}), ("upto-before-after",
                                                                {"after": 5, "upto": 4}),
                            ("upto-huge", {"upto": 2**70}), ("after-bool", {"after": True}),
                            ("upto-string", {"upto": "5"}))],
    ]


async def test_channel_servers_close_garbage_links_and_keep_serving(
    cluster: Any, http: httpx.AsyncClient
) -> None:
    ws = cluster.seed(2)
    user, general = ws["users"][0], ws["channels"][0]["id"]
    async with rtm(http, cluster, user["token"]) as conn:
        log_before = await event_log(http, cluster, general)
        secret = cluster.internal_headers()["x-backchannel-internal"]
        garbage = _channel_link_garbage(general, log_before[-1]["seq"] + 1, secret)
        for server in cluster.processes("channel_server"):
            for name, frames in garbage:
                async with open_websocket_url(server["url"]) as link:
                    try:
                        for frame in frames:
                            await link.send_message(frame)
                    except ConnectionClosed:
                        pass  # refused at an earlier frame: what is asserted next
                    try:
                        await assert_link_closed(link)
                    except BaseException as exc:
                        raise AssertionError(f"{server['name']} {name}: link not closed") \
                            from exc
        assert await event_log(http, cluster, general) == log_before
        await assert_all_healthy(http, cluster)
        await call(http, cluster, "chat.postMessage", user["token"], channel=general,
                   text="after channel garbage")
        await first_message_is(conn, general, "after channel garbage")


# --- a channel server crash (own cluster: this test kills a process) -----------------------


@pytest.fixture
def fragile_cluster(tmp_path: Any) -> Iterator[Cluster]:
    with private_cluster(tmp_path, channels=2, gateways=1) as c:
        yield c


async def test_gateway_survives_a_channel_server_crash(
    fragile_cluster: Any, http: httpx.AsyncClient
) -> None:
    cluster = fragile_cluster
    ws = cluster.seed(1)
    gateway = cluster.processes("gateway_server")[0]
    victim = cluster.processes("channel_server")[0]
    async with rtm(http, cluster, ws["users"][0]["token"]) as conn:
        os.kill(victim["pid"], signal.SIGKILL)
        # wait until the gateway has noticed the dead link; it must still be serving then
        with trio.fail_after(WAIT_S):
            while True:
                try:
                    resp = await http.get(gateway["http_url"] + "/health")
                except httpx.TransportError as exc:
                    raise AssertionError(f"gateway died after {victim['name']} was killed") \
                        from exc
                assert resp.status_code == 200
                if resp.json()["upstreams"].get(victim["name"]) is False:
                    break
                await trio.sleep(0.05)
        # the client connection survives, and so does the gateway process
        await conn.send_message(json.dumps({"type": "ping", "id": 9}))
        assert await until(conn, lambda f: f.get("type") == "pong") == {
            "type": "pong", "reply_to": 9}
    resp = await http.get(gateway["http_url"] + "/health")
    assert resp.status_code == 200
