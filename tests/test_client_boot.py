"""What a real Slack client does at startup, through slack_sdk against the running cluster
(issue 7): rtm.connect and the socket's hello, then the directory (users, conversations of
every type, user groups, prefs, emoji, team), then per channel info, history and mark, and a
message sent over the RTM socket. Shapes are Slack's documented ones.

And the HTTP status rule the official SDKs depend on: every ``ok: false`` is HTTP 200, only
``ratelimited`` is 429 (with Retry-After)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from trio_websocket import open_websocket_url

from tests.conftest import RtmSession

ALL_TYPES = "public_channel,private_channel,mpim,im"


def web(cluster, token: str) -> WebClient:
    return WebClient(token=token, base_url=cluster.api)


async def call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """slack_sdk is synchronous: run it off the trio loop so the socket keeps reading."""
    return await trio.to_thread.run_sync(lambda: fn(**kwargs))


async def paged(fn: Callable[..., Any], key: str, **kwargs: Any) -> tuple[list[dict], int]:
    """Every item of a cursor-paginated method, following ``next_cursor`` as SDKs do; and
    how many pages it took."""
    items: list[dict] = []
    cursor, pages = "", 0
    while True:
        page = await call(fn, cursor=cursor or None, **kwargs)
        pages += 1
        assert isinstance(page[key], list)
        items += page[key]
        cursor = page.get("response_metadata", {}).get("next_cursor", "")
        if not cursor:
            return items, pages
        assert pages < 100, "the cursor never ends"


def _workspace(cluster) -> dict[str, Any]:
    """Seeded users, plus what a user has in a real workspace: a public and a private
    channel, a DM and a group DM, and unread messages from someone else."""
    ws = cluster.seed(3)
    me, two, three = ws["users"]
    general = ws["channels"][0]["id"]
    mine, theirs = web(cluster, me["token"]), web(cluster, two["token"])
    tag = secrets.token_hex(3)
    public = mine.conversations_create(name=f"boot-pub-{tag}")["channel"]["id"]
    private = mine.conversations_create(name=f"boot-priv-{tag}", is_private=True)
    private = private["channel"]["id"]
    mine.conversations_invite(channel=private, users=two["id"])
    dm = mine.conversations_open(users=two["id"])["channel"]["id"]
    mpim = mine.conversations_open(users=f"{two['id']},{three['id']}")["channel"]["id"]
    unread = {c: theirs.chat_postMessage(channel=c, text=f"unread in {c}")["ts"]
              for c in (general, private, dm, mpim)}
    return {**ws, "general": general, "public": public, "private": private, "dm": dm,
            "mpim": mpim, "unread": unread}


async def _connect(client: WebClient) -> tuple[dict[str, Any], str]:
    reply = await call(client.rtm_connect)
    assert reply["ok"] and reply["url"].startswith(("ws://", "wss://"))
    assert {"id", "name", "domain"} <= set(reply["team"])
    assert {"id", "name"} <= set(reply["self"])
    return reply.data, reply["url"]


async def _directory(client: WebClient, ws: dict[str, Any]) -> list[dict[str, Any]]:
    """users.list, conversations.list (every type), usergroups.list, users.prefs.get,
    emoji.list, team.info: what a client loads before it shows anything."""
    members, pages = await paged(client.users_list, "members", limit=2)
    ids = [m["id"] for m in members]
    assert pages > 1 and len(ids) == len(set(ids)), "pages overlap"
    assert {u["id"] for u in ws["users"]} | {ws["bot"]["id"]} <= set(ids)
    for m in members:
        assert {"id", "team_id", "name", "deleted", "profile", "is_bot"} <= set(m), m
        assert isinstance(m["profile"], dict)
    assert next(m for m in members if m["id"] == ws["bot"]["id"])["is_bot"] is True

    channels, pages = await paged(client.conversations_list, "channels", types=ALL_TYPES,
                                  limit=2)
    by_id = {c["id"]: c for c in channels}
    assert pages > 1 and len(by_id) == len(channels), "pages overlap"
    wanted = [ws[k] for k in ("general", "public", "private", "dm", "mpim")]
    assert set(wanted) <= set(by_id)
    assert by_id[ws["general"]]["is_general"] is True
    assert by_id[ws["private"]]["is_private"] is True
    assert by_id[ws["dm"]]["is_im"] is True and by_id[ws["dm"]]["user"] == ws["users"][1]["id"]
    assert by_id[ws["mpim"]]["is_mpim"] is True

    groups = await call(client.usergroups_list)
    assert isinstance(groups["usergroups"], list)
    prefs = await call(client.api_call, api_method="users.prefs.get")
    assert isinstance(prefs["prefs"], dict)
    emoji = await call(client.emoji_list)
    assert isinstance(emoji["emoji"], dict)  # an empty map is a true answer
    team = await call(client.team_info)
    assert team["team"]["id"] == ws["team"]["id"]
    assert {"name", "domain"} <= set(team["team"])
    return [by_id[c] for c in wanted]


async def _read_all(client: WebClient, ws: dict[str, Any], channels: list[dict]) -> None:
    """Per channel: info (with the caller's read state), history, mark as read."""
    for channel in channels:
        cid = channel["id"]
        info = (await call(client.conversations_info, channel=cid))["channel"]
        assert info["id"] == cid
        history = await call(client.conversations_history, channel=cid, limit=50)
        assert isinstance(history["messages"], list) and "has_more" in history
        if cid not in ws["unread"]:
            continue
        assert {"last_read", "unread_count", "unread_count_display"} <= set(info), info
        assert info["unread_count_display"] >= 1
        newest = history["messages"][0]["ts"]
        assert newest == ws["unread"][cid]
        marked = await call(client.conversations_mark, channel=cid, ts=newest)
        assert marked["ok"]
        after = (await call(client.conversations_info, channel=cid))["channel"]
        assert after["last_read"] == newest and after["unread_count_display"] == 0


async def test_a_client_boots_reads_and_chats(cluster):
    ws = await trio.to_thread.run_sync(_workspace, cluster)
    me = ws["users"][0]
    client = web(cluster, me["token"])
    reply, url = await _connect(client)
    assert reply["self"]["id"] == me["id"] and reply["team"]["id"] == ws["team"]["id"]
    async with open_websocket_url(url) as sock:
        rtm = RtmSession(sock, url)
        await rtm.next({"type": "hello"})
        channels = await _directory(client, ws)
        await _read_all(client, ws, channels)

        await rtm.send({"type": "message", "id": 1, "channel": ws["general"], "text": "hi"})
        ack = await rtm.next(lambda e: e.get("reply_to") == 1)
        assert ack["ok"] is True and ack["text"] == "hi" and isinstance(ack["ts"], str)
        # the message's own event may come before or after the reply: Slack orders neither
        echo = next((e for e in rtm.seen if e.get("type") == "message"
                     and e.get("ts") == ack["ts"] and "reply_to" not in e), None) \
            or await rtm.next({"type": "message", "ts": ack["ts"]})
        assert echo["user"] == me["id"] and echo["channel"] == ws["general"]
        assert echo["text"] == "hi"
    history = await call(client.conversations_history, channel=ws["general"], limit=5)
    newest = history["messages"][0]
    assert (newest["ts"], newest["user"], newest["text"]) == (ack["ts"], me["id"], "hi")


# --- HTTP status: 200 for every ok:false, 429 only for ratelimited -----------------------

def _raw(cluster, method: str, token: str | None, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(cluster.api + method, json=body, headers=headers, timeout=10)


def _refused(response: httpx.Response, error: str) -> None:
    assert (response.status_code, response.json()) == (200, {"ok": False, "error": error}), \
        (response.request.url, response.status_code, response.text)


@pytest.fixture(scope="module")
def token(cluster) -> str:
    return cluster.seed(1)["users"][0]["token"]


@pytest.mark.parametrize("method", ["nope.nope", "chat.postMessagee", "conversations"])
def test_unknown_method_is_http_200(cluster, token, method):
    _refused(_raw(cluster, method, token), "unknown_method")
    _refused(_raw(cluster, method, None), "unknown_method")
    get = httpx.get(cluster.api + method, params={"token": token}, timeout=10)
    _refused(get, "unknown_method")
    with pytest.raises(SlackApiError) as refused:  # an error, not a transport failure
        web(cluster, token).api_call(method)
    assert refused.value.response.status_code == 200
    assert refused.value.response["error"] == "unknown_method"


AUTHED = ["auth.test", "chat.postMessage", "conversations.list", "conversations.history",
          "users.list", "users.info", "team.info", "emoji.list", "usergroups.list",
          "rtm.connect"]


@pytest.mark.parametrize("method", AUTHED)
def test_auth_failures_are_http_200(cluster, method):
    _refused(_raw(cluster, method, "xoxp-not-a-token"), "invalid_auth")
    _refused(_raw(cluster, method, None), "not_authed")


@pytest.mark.parametrize("method", ["conversations.info", "conversations.history",
                                    "conversations.mark", "conversations.members",
                                    "chat.postMessage"])
def test_channel_not_found_is_http_200(cluster, token, method):
    body = {"channel": "C0NOTREAL1", "text": "x", "ts": "1700000000.000100"}
    _refused(_raw(cluster, method, token, **body), "channel_not_found")


def test_only_ratelimited_is_429(cluster):
    """The tier-1 budget of a fresh user, spent: the burst (the whole budget) answered 200,
    the first call over it 429 with Retry-After and Slack's body."""
    from webapp import api

    method = "rtm.connect"
    budget = api.load()[method].per_minute(cluster.settings.rate_limit_per_minute)
    token = cluster.seed(1)["users"][0]["token"]
    with httpx.Client(base_url=cluster.api, timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        statuses = []
        for _ in range(2 * budget):  # the bucket refills while we call: leave room
            response = http.post(method)
            statuses.append(response.status_code)
            if response.status_code != 200:
                break
    assert statuses[:-1] == [200] * (len(statuses) - 1) and len(statuses) > budget
    assert response.status_code == 429
    assert response.json() == {"ok": False, "error": "ratelimited"}
    assert int(response.headers["Retry-After"]) >= 1
