"""chat.* through slack_sdk against the running cluster: postMessage by id, name and user id,
blocks and attachments, update, delete, meMessage, getPermalink and postEphemeral, with their
RTM events; every refused call answers Slack's error code and changes nothing."""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pymysql
import pytest
import trio
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from cluster import shards
from tests.conftest import Cluster, rtm_session

SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*hello* blocks"}}
ATTACHMENT = {"fallback": "fb", "text": "attached", "color": "#36a64f"}


# --- helpers (test_api_threads.py and test_rtm_send.py use them too) ----------------------


def web(cluster: Cluster, token: str) -> WebClient:
    return WebClient(token=token, base_url=cluster.api)


def error_of(call: Callable[[], Any]) -> str:
    with pytest.raises(SlackApiError) as exc:
        call()
    return exc.value.response["error"]


_HTTP = httpx.Client(timeout=10)  # one pool: a client per call costs an SSL context each


def event_log(cluster: Cluster, stream: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        resp = _HTTP.get(cluster.root + "/internal/events", headers=cluster.internal_headers(),
                         params={"stream": stream, "after_seq": out[-1]["seq"] if out else 0,
                                 "limit": 1000})
        page = resp.json()["events"]
        out += page
        if len(page) < 1000:
            return out


def history(cluster: Cluster, token: str, channel: str) -> list[dict[str, Any]]:
    return web(cluster, token).conversations_history(channel=channel, limit=999)["messages"]


def _sql(cluster: Cluster, database: str, statement: str, params: tuple[Any, ...]) -> None:
    s = cluster.settings
    conn = pymysql.connect(host=s.mysql_host, port=s.mysql_port, user=s.mysql_user,
                           password=s.mysql_password, database=database, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
    finally:
        conn.close()


def set_admin(cluster: Cluster, user_id: str, admin: bool) -> None:
    """Make a user a workspace admin (or not); before its token is first used, since the
    webapp caches identities."""
    _sql(cluster, cluster.settings.db_name("directory"),
         "UPDATE users SET is_admin=%s WHERE id=%s", (int(admin), user_id))


def set_archived(cluster: Cluster, channel: str) -> None:
    """What conversations.archive leaves in the channel's row."""
    s = cluster.settings
    _sql(cluster, s.db_name("chat", shards.shard_for(channel, s.chat_shards)),
         "UPDATE channels SET is_archived=1 WHERE id=%s", (channel,))


def new_channel(cluster: Cluster, token: str, private: bool = False) -> str:
    name = ("priv-" if private else "pub-") + secrets.token_hex(4)
    return web(cluster, token).conversations_create(name=name, is_private=private)["channel"]["id"]


@dataclasses.dataclass
class Ws:
    cluster: Cluster
    team: str
    a: dict[str, Any]  # posts; member of everything below
    b: dict[str, Any]  # #general only
    c: dict[str, Any]  # #general only
    admin: dict[str, Any]  # a workspace admin, in #general
    general: str
    pub: str  # public, a only
    priv: str  # private, a only
    archived: str  # public, a and b, archived
    other: dict[str, Any]  # another workspace
    users: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # all, in #general

    def as_(self, who: str) -> WebClient:
        return web(self.cluster, getattr(self, who)["token"])

    @property
    def streams(self) -> list[str]:
        return [self.general, self.pub, self.priv, self.archived, self.a["id"], self.b["id"],
                self.other["channels"][0]["id"]]

    def snapshot(self) -> dict[str, Any]:
        """What a refused call must leave as it was."""
        return {"events": {s: event_log(self.cluster, s) for s in self.streams},
                "history": {ch: history(self.cluster, self.a["token"], ch)
                            for ch in (self.general, self.pub, self.priv, self.archived)}}


def make_ws(cluster: Cluster, users: int = 4) -> Ws:
    seeded = cluster.seed(users)
    a, b, c, admin = seeded["users"][:4]
    for user in seeded["users"]:
        set_admin(cluster, user["id"], user is admin)
    other = cluster.seed(1)
    general = seeded["channels"][0]["id"]
    pub, priv = new_channel(cluster, a["token"]), new_channel(cluster, a["token"], True)
    archived = new_channel(cluster, a["token"])
    web(cluster, b["token"]).conversations_join(channel=archived)
    web(cluster, a["token"]).chat_postMessage(channel=archived, text="before the archive")
    set_archived(cluster, archived)
    return Ws(cluster, seeded["team"]["id"], a, b, c, admin, general, pub, priv, archived,
              other, seeded["users"])


@pytest.fixture(scope="module")
def ws(cluster: Cluster) -> Iterator[Ws]:
    yield make_ws(cluster)


def refused(ws: Ws, expected: str, call: Callable[[], Any]) -> None:
    before = ws.snapshot()
    assert error_of(call) == expected
    assert ws.snapshot() == before


# --- chat.postMessage ------------------------------------------------------------------------


def test_post_by_channel_name_with_or_without_hash(ws: Ws) -> None:
    for ref in ("general", "#general"):
        reply = ws.as_("a").chat_postMessage(channel=ref, text=f"by name {ref}")
        assert reply["channel"] == ws.general
        assert history(ws.cluster, ws.b["token"], ws.general)[0]["ts"] == reply["ts"]


def test_post_to_a_user_id_opens_the_dm(ws: Ws) -> None:
    reply = ws.as_("a").chat_postMessage(channel=ws.c["id"], text="just us")
    dm = reply["channel"]
    assert dm.startswith("D")
    assert ws.as_("a").chat_postMessage(channel=ws.c["id"], text="again")["channel"] == dm
    texts = [m["text"] for m in history(ws.cluster, ws.c["token"], dm)]
    assert texts == ["again", "just us"]
    assert error_of(lambda: ws.as_("b").conversations_history(channel=dm)) == \
        "channel_not_found"


async def test_blocks_and_attachments_are_stored_echoed_and_delivered(ws: Ws) -> None:
    async with rtm_session(ws.cluster, ws.b["token"]) as rtm:
        reply = await trio.to_thread.run_sync(lambda: ws.as_("a").chat_postMessage(
            channel=ws.general, text="", blocks=[SECTION], attachments=[ATTACHMENT]))
        event = await rtm.next({"type": "message", "ts": reply["ts"]})
    for message in (reply["message"], event):
        assert message["blocks"] == [SECTION]
        assert message["attachments"] == [ATTACHMENT]
        assert message["text"] == ""
    stored = history(ws.cluster, ws.b["token"], ws.general)[0]
    assert (stored["ts"], stored["blocks"], stored["attachments"]) == (
        reply["ts"], [SECTION], [ATTACHMENT])


def test_blocks_as_a_json_string_in_a_form_count_as_content(ws: Ws) -> None:
    resp = _HTTP.post(ws.cluster.api + "chat.postMessage",
                      data={"channel": ws.general, "blocks": json.dumps([SECTION])},
                      headers={"authorization": f"Bearer {ws.a['token']}"})
    body = resp.json()
    assert body["ok"] and body["message"]["blocks"] == [SECTION], body


def test_slack_formatting_and_authorship_arguments_are_accepted(ws: Ws) -> None:
    reply = ws.as_("a").chat_postMessage(
        channel=ws.general, text="<@U1> *bold*", mrkdwn=False, parse="full", link_names=True,
        unfurl_links=True, unfurl_media=False, username="someone", icon_emoji=":ghost:",
        icon_url="https://example.com/i.png", as_user=True,
        metadata={"event_type": "t", "event_payload": {"k": 1}})
    assert reply["message"]["text"] == "<@U1> *bold*"
    assert reply["message"]["user"] == ws.a["id"]


POST_REFUSALS: list[tuple[str, dict[str, Any], str, str]] = [
    ("no-content", {"text": ""}, "a", "no_text"),
    ("empty-blocks-only", {"blocks": []}, "a", "no_text"),
    ("blocks-not-json", {"blocks": "not json"}, "a", "invalid_blocks"),
    ("blocks-object", {"blocks": json.dumps(SECTION)}, "a", "invalid_blocks"),
    ("blocks-of-numbers", {"blocks": [1, 2]}, "a", "invalid_blocks"),
    ("block-without-type", {"blocks": [{"text": "x"}]}, "a", "invalid_blocks"),
    ("block-type-not-string", {"blocks": [{"type": 7}]}, "a", "invalid_blocks"),
    ("block-id-too-long", {"blocks": [{**SECTION, "block_id": "b" * 256}]}, "a",
     "invalid_blocks"),
    ("51-blocks", {"blocks": [SECTION] * 51}, "a", "invalid_blocks"),
    ("blocks-too-big", {"blocks": [{"type": "section", "text": {
        "type": "plain_text", "text": "x" * 140_000}}]}, "a", "invalid_blocks"),
    ("attachments-not-json", {"attachments": "{nope"}, "a", "invalid_attachments"),
    ("attachments-strings", {"attachments": ["x"]}, "a", "invalid_attachments"),
    ("101-attachments", {"attachments": [ATTACHMENT] * 101}, "a", "too_many_attachments"),
    ("metadata-not-object", {"text": "x", "metadata": "[1]"}, "a", "invalid_metadata_format"),
    ("text-too-long", {"text": "x" * 40_001}, "a", "msg_too_long"),
    ("reply-broadcast-garbage", {"text": "x", "reply_broadcast": "maybe"}, "a",
     "invalid_arguments"),
]


@pytest.mark.parametrize(("body", "who", "expected"),
                         [pytest.param(b, w, e, id=i) for i, b, w, e in POST_REFUSALS])
def test_bad_posts_are_refused_and_change_nothing(ws: Ws, body: dict[str, Any], who: str,
                                                  expected: str) -> None:
    refused(ws, expected, lambda: ws.as_(who).api_call(
        "chat.postMessage", json={"channel": ws.general, **body}))


@pytest.mark.parametrize(("channel", "who", "expected"), [
    ("pub", "b", "not_in_channel"),
    ("priv", "b", "channel_not_found"),
    ("archived", "b", "is_archived"),
    ("no-such-name", "a", "channel_not_found"),
    ("other", "a", "channel_not_found"),
])
def test_posts_where_the_caller_may_not_are_refused(ws: Ws, channel: str, who: str,
                                                   expected: str) -> None:
    ref = {"pub": ws.pub, "priv": ws.priv, "archived": ws.archived,
           "other": ws.other["channels"][0]["id"]}.get(channel, channel)
    refused(ws, expected, lambda: ws.as_(who).chat_postMessage(channel=ref, text="no"))


def test_post_to_a_user_of_another_workspace_is_refused(ws: Ws) -> None:
    refused(ws, "channel_not_found", lambda: ws.as_("a").chat_postMessage(
        channel=ws.other["users"][0]["id"], text="across"))


# --- chat.update -----------------------------------------------------------------------------


async def test_update_edits_the_message_and_emits_message_changed(ws: Ws) -> None:
    posted = ws.as_("a").chat_postMessage(channel=ws.general, text="first draft",
                                          blocks=[SECTION])
    async with rtm_session(ws.cluster, ws.b["token"]) as rtm:
        reply = await trio.to_thread.run_sync(lambda: ws.as_("a").chat_update(
            channel=ws.general, ts=posted["ts"], text="final"))
        event = await rtm.next({"type": "message", "subtype": "message_changed"})
    assert (reply["channel"], reply["ts"], reply["text"]) == (ws.general, posted["ts"], "final")
    edited = reply["message"]["edited"]
    assert edited["user"] == ws.a["id"] and edited["ts"] > posted["ts"]
    assert reply["message"]["blocks"] == [SECTION]  # not given: kept, as in Slack
    assert event["hidden"] is True and event["channel"] == ws.general
    assert event["ts"] == event["event_ts"] == edited["ts"]
    assert event["message"] == reply["message"]
    assert event["previous_message"]["text"] == "first draft"
    assert "edited" not in event["previous_message"]
    stored = next(m for m in history(ws.cluster, ws.b["token"], ws.general)
                  if m["ts"] == posted["ts"])
    assert stored == reply["message"]


def test_update_with_an_empty_blocks_list_removes_them(ws: Ws) -> None:
    posted = ws.as_("a").chat_postMessage(channel=ws.general, text="t", blocks=[SECTION])
    reply = ws.as_("a").chat_update(channel=ws.general, ts=posted["ts"], text="t2", blocks=[])
    assert "blocks" not in reply["message"] and reply["message"]["text"] == "t2"


def test_admin_may_update_and_delete_others_messages(ws: Ws) -> None:
    posted = ws.as_("b").chat_postMessage(channel=ws.general, text="by b")
    reply = ws.as_("admin").chat_update(channel=ws.general, ts=posted["ts"], text="moderated")
    assert reply["message"]["user"] == ws.b["id"]
    assert reply["message"]["edited"]["user"] == ws.admin["id"]
    ws.as_("admin").chat_delete(channel=ws.general, ts=posted["ts"])
    assert posted["ts"] not in {m["ts"] for m in history(ws.cluster, ws.a["token"], ws.general)}


def test_update_refusals(ws: Ws) -> None:
    mine = ws.as_("a").chat_postMessage(channel=ws.general, text="a's")["ts"]
    old = history(ws.cluster, ws.a["token"], ws.archived)[0]["ts"]
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("cant_update_message", lambda: ws.as_("b").chat_update(
            channel=ws.general, ts=mine, text="hijack")),
        ("message_not_found", lambda: ws.as_("a").chat_update(
            channel=ws.general, ts="1000000000.000001", text="x")),
        ("message_not_found", lambda: ws.as_("a").api_call(
            "chat.update", json={"channel": ws.general, "text": "x"})),
        ("message_not_found", lambda: ws.as_("a").chat_update(
            channel=ws.general, ts="yesterday", text="x")),
        ("message_not_found", lambda: ws.as_("a").chat_update(
            channel=ws.pub, ts=mine, text="wrong channel")),
        ("no_text", lambda: ws.as_("a").chat_update(channel=ws.general, ts=mine, text="")),
        ("invalid_blocks", lambda: ws.as_("a").api_call(
            "chat.update", json={"channel": ws.general, "ts": mine, "blocks": [{"x": 1}]})),
        ("msg_too_long", lambda: ws.as_("a").chat_update(
            channel=ws.general, ts=mine, text="x" * 40_001)),
        ("channel_not_found", lambda: ws.as_("b").chat_update(
            channel=ws.priv, ts=mine, text="x")),
        ("channel_not_found", lambda: ws.as_("a").chat_update(
            channel=ws.other["channels"][0]["id"], ts=mine, text="x")),
        ("channel_not_found", lambda: ws.as_("a").api_call(
            "chat.update", json={"ts": mine, "text": "x"})),
        ("is_archived", lambda: ws.as_("a").chat_update(channel=ws.archived, ts=old,
                                                        text="x")),
        ("invalid_arguments", lambda: ws.as_("a").api_call(
            "chat.update", json={"channel": ws.general, "ts": mine, "text": ["x"]})),
    ]
    for expected, call in cases:
        refused(ws, expected, call)


# --- chat.delete -----------------------------------------------------------------------------


async def test_delete_removes_the_message_and_emits_message_deleted(ws: Ws) -> None:
    posted = ws.as_("a").chat_postMessage(channel=ws.general, text="regret")
    async with rtm_session(ws.cluster, ws.b["token"]) as rtm:
        reply = await trio.to_thread.run_sync(lambda: ws.as_("a").chat_delete(
            channel=ws.general, ts=posted["ts"]))
        event = await rtm.next({"type": "message", "subtype": "message_deleted"})
    assert (reply["channel"], reply["ts"]) == (ws.general, posted["ts"])
    assert event["deleted_ts"] == posted["ts"] and event["hidden"] is True
    assert event["previous_message"] == posted["message"]
    assert event["channel"] == ws.general and event["ts"] > posted["ts"]
    assert posted["ts"] not in {m["ts"] for m in history(ws.cluster, ws.a["token"], ws.general)}
    assert error_of(lambda: ws.as_("a").chat_delete(channel=ws.general, ts=posted["ts"])) == \
        "message_not_found"


def test_delete_refusals(ws: Ws) -> None:
    mine = ws.as_("a").chat_postMessage(channel=ws.general, text="keep")["ts"]
    old = history(ws.cluster, ws.a["token"], ws.archived)[0]["ts"]
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("cant_delete_message", lambda: ws.as_("b").chat_delete(channel=ws.general, ts=mine)),
        ("cant_delete_message", lambda: ws.as_("c").chat_delete(channel=ws.general, ts=mine)),
        ("message_not_found", lambda: ws.as_("a").chat_delete(
            channel=ws.general, ts="1000000000.000001")),
        ("message_not_found", lambda: ws.as_("a").api_call(
            "chat.delete", json={"channel": ws.general})),
        ("message_not_found", lambda: ws.as_("a").api_call(
            "chat.delete", json={"channel": ws.general, "ts": ["1.000001"]})),
        ("channel_not_found", lambda: ws.as_("b").chat_delete(channel=ws.priv, ts=mine)),
        ("channel_not_found", lambda: ws.as_("a").chat_delete(
            channel=ws.other["channels"][0]["id"], ts=mine)),
        ("is_archived", lambda: ws.as_("a").chat_delete(channel=ws.archived, ts=old)),
    ]
    for expected, call in cases:
        refused(ws, expected, call)


# --- chat.meMessage --------------------------------------------------------------------------


async def test_me_message(ws: Ws) -> None:
    async with rtm_session(ws.cluster, ws.b["token"]) as rtm:
        reply = await trio.to_thread.run_sync(lambda: ws.as_("a").chat_meMessage(
            channel="#general", text="waves"))
        event = await rtm.next({"type": "message", "ts": reply["ts"]})
    assert set(reply.data) == {"ok", "channel", "ts"} and reply["channel"] == ws.general
    assert (event["subtype"], event["text"], event["user"]) == ("me_message", "waves",
                                                                ws.a["id"])
    assert history(ws.cluster, ws.b["token"], ws.general)[0]["subtype"] == "me_message"
    edited = ws.as_("a").chat_update(channel=ws.general, ts=reply["ts"], text="waves twice")
    assert edited["message"]["subtype"] == "me_message"
    refused(ws, "no_text", lambda: ws.as_("a").chat_meMessage(channel=ws.general, text=""))
    refused(ws, "not_in_channel", lambda: ws.as_("b").chat_meMessage(channel=ws.pub,
                                                                     text="hi"))
    refused(ws, "channel_not_found", lambda: ws.as_("b").chat_meMessage(channel=ws.priv,
                                                                        text="hi"))


# --- chat.getPermalink -----------------------------------------------------------------------


def test_get_permalink(ws: Ws) -> None:
    parent = ws.as_("a").chat_postMessage(channel=ws.general, text="link me")["ts"]
    reply = ws.as_("b").chat_postMessage(channel=ws.general, text="r", thread_ts=parent)["ts"]
    domain = ws.as_("a").auth_test()["url"].removeprefix("https://").split(".")[0]
    base = f"https://{domain}.backchannel.local/archives/{ws.general}/p"
    top = ws.as_("b").chat_getPermalink(channel=ws.general, message_ts=parent)
    assert top["channel"] == ws.general
    assert top["permalink"] == base + parent.replace(".", "")
    threaded = ws.as_("b").chat_getPermalink(channel=ws.general, message_ts=reply)
    assert threaded["permalink"] == (base + reply.replace(".", "")
                                     + f"?thread_ts={parent}&cid={ws.general}")
    for expected, call in [
        ("message_not_found", lambda: ws.as_("a").chat_getPermalink(
            channel=ws.general, message_ts="1000000000.000001")),
        ("message_not_found", lambda: ws.as_("a").api_call(
            "chat.getPermalink", params={"channel": ws.general})),
        ("message_not_found", lambda: ws.as_("a").chat_getPermalink(
            channel=ws.pub, message_ts=parent)),
        ("channel_not_found", lambda: ws.as_("b").chat_getPermalink(
            channel=ws.priv, message_ts=parent)),
        ("channel_not_found", lambda: ws.as_("a").chat_getPermalink(
            channel=ws.other["channels"][0]["id"], message_ts=parent)),
    ]:
        assert error_of(call) == expected


# --- chat.postEphemeral ----------------------------------------------------------------------


async def test_ephemeral_reaches_only_its_user_and_is_never_stored(ws: Ws) -> None:
    before = ws.snapshot()
    async with rtm_session(ws.cluster, ws.b["token"]) as b1, \
            rtm_session(ws.cluster, ws.b["token"]) as b2, \
            rtm_session(ws.cluster, ws.c["token"]) as c:
        reply = await trio.to_thread.run_sync(lambda: ws.as_("a").chat_postEphemeral(
            channel="general", user=ws.b["id"], text="psst", blocks=[SECTION]))
        seen = [await b.next({"type": "message", "is_ephemeral": True}) for b in (b1, b2)]
        assert seen[0] == seen[1] == {
            "type": "message", "is_ephemeral": True, "user": ws.a["id"], "text": "psst",
            "blocks": [SECTION], "ts": reply["message_ts"], "team": ws.team,
            "channel": ws.general, "event_ts": reply["message_ts"]}
        assert set(reply.data) == {"ok", "message_ts"}
        assert ws.snapshot() == before  # nothing stored: no message, no event
        marker = await trio.to_thread.run_sync(lambda: ws.as_("a").chat_postMessage(
            channel=ws.general, text="marker"))
        await c.next({"type": "message", "ts": marker["ts"]})
        await c.send({"type": "ping", "id": 99})
        await c.next({"type": "pong", "reply_to": 99})
        assert not [e for e in c.seen if e.get("is_ephemeral") or e.get("text") == "psst"]


def test_ephemeral_refusals(ws: Ws) -> None:
    old = history(ws.cluster, ws.a["token"], ws.archived)[0]["ts"]
    assert old
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("user_not_in_channel", lambda: ws.as_("a").chat_postEphemeral(
            channel=ws.pub, user=ws.b["id"], text="x")),
        ("user_not_in_channel", lambda: ws.as_("a").chat_postEphemeral(
            channel=ws.general, user=ws.other["users"][0]["id"], text="x")),
        ("user_not_in_channel", lambda: ws.as_("a").api_call(
            "chat.postEphemeral", json={"channel": ws.general, "text": "x"})),
        ("not_in_channel", lambda: ws.as_("b").chat_postEphemeral(
            channel=ws.pub, user=ws.a["id"], text="x")),
        ("channel_not_found", lambda: ws.as_("b").chat_postEphemeral(
            channel=ws.priv, user=ws.a["id"], text="x")),
        ("channel_not_found", lambda: ws.as_("a").chat_postEphemeral(
            channel=ws.other["channels"][0]["id"], user=ws.a["id"], text="x")),
        ("is_archived", lambda: ws.as_("a").chat_postEphemeral(
            channel=ws.archived, user=ws.b["id"], text="x")),
        ("no_text", lambda: ws.as_("a").chat_postEphemeral(
            channel=ws.general, user=ws.b["id"], text="")),
        ("invalid_blocks", lambda: ws.as_("a").api_call("chat.postEphemeral", json={
            "channel": ws.general, "user": ws.b["id"], "blocks": "nope"})),
        ("thread_not_found", lambda: ws.as_("a").chat_postEphemeral(
            channel=ws.general, user=ws.b["id"], text="x", thread_ts="1000000000.000001")),
    ]
    for expected, call in cases:
        refused(ws, expected, call)
