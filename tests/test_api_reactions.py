"""reactions.* through slack_sdk against the running cluster: add, remove, get and list, the
reactions that history, threads and chat.update show, the RTM events members receive, and
every refused call answering Slack's error code while changing nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

from tests.conftest import Cluster, rtm_session
from tests.test_api_chat import Ws, error_of, history, make_ws, refused, web


@pytest.fixture(scope="module")
def ws(cluster: Cluster) -> Iterator[Ws]:
    yield make_ws(cluster)


def post(ws: Ws, who: str, channel: str, text: str = "react to me", **kw: Any) -> str:
    return ws.as_(who).chat_postMessage(channel=channel, text=text, **kw)["ts"]


def react(ws: Ws, who: str, channel: str, ts: str, name: str) -> None:
    assert ws.as_(who).reactions_add(channel=channel, timestamp=ts, name=name)["ok"]


def shown(ws: Ws, channel: str, ts: str, token: str | None = None) -> dict[str, Any]:
    """The message as conversations.history shows it."""
    found = [m for m in history(ws.cluster, token or ws.a["token"], channel) if m["ts"] == ts]
    assert len(found) == 1
    return found[0]


# --- reactions.add / reactions.remove --------------------------------------------------------


async def test_add_emits_reaction_added_and_shows_in_history_and_get(ws: Ws) -> None:
    ts = post(ws, "a", ws.general)
    async with rtm_session(ws.cluster, ws.c["token"]) as rtm:
        await trio.to_thread.run_sync(lambda: react(ws, "b", ws.general, ts, "thumbsup"))
        event = await rtm.next({"type": "reaction_added"})
    # the gateway adds the stream's position (seq, stream) to every event
    assert {k: v for k, v in event.items() if k not in ("event_ts", "seq", "stream")} == {
        "type": "reaction_added", "user": ws.b["id"], "reaction": "thumbsup",
        "item_user": ws.a["id"], "item": {"type": "message", "channel": ws.general, "ts": ts}}
    react(ws, "c", ws.general, ts, "thumbsup")
    react(ws, "a", ws.general, ts, ":tada:")  # the colons clients send are dropped
    react(ws, "b", ws.general, ts, "wave::skin-tone-3")
    expected = [{"name": "thumbsup", "users": [ws.b["id"], ws.c["id"]], "count": 2},
                {"name": "tada", "users": [ws.a["id"]], "count": 1},
                {"name": "wave::skin-tone-3", "users": [ws.b["id"]], "count": 1}]
    assert shown(ws, ws.general, ts)["reactions"] == expected
    got = ws.as_("c").reactions_get(channel=ws.general, timestamp=ts).data
    assert (got["type"], got["channel"], got["message"]["ts"]) == ("message", ws.general, ts)
    assert got["message"]["reactions"] == expected
    assert "pinned_to" not in got["message"]


async def test_remove_emits_reaction_removed_and_drops_it(ws: Ws) -> None:
    ts = post(ws, "a", ws.general)
    react(ws, "b", ws.general, ts, "eyes")
    react(ws, "c", ws.general, ts, "eyes")
    async with rtm_session(ws.cluster, ws.a["token"]) as rtm:
        await trio.to_thread.run_sync(lambda: ws.as_("b").reactions_remove(
            channel=ws.general, timestamp=ts, name="eyes"))
        event = await rtm.next({"type": "reaction_removed"})
    assert event["user"] == ws.b["id"] and event["reaction"] == "eyes"
    assert event["item"] == {"type": "message", "channel": ws.general, "ts": ts}
    assert event["item_user"] == ws.a["id"]
    assert shown(ws, ws.general, ts)["reactions"] == [
        {"name": "eyes", "users": [ws.c["id"]], "count": 1}]
    ws.as_("c").reactions_remove(channel=ws.general, timestamp=ts, name="eyes")
    assert "reactions" not in shown(ws, ws.general, ts)
    assert "reactions" not in ws.as_("a").reactions_get(
        channel=ws.general, timestamp=ts)["message"]


def test_reactions_on_replies_dms_and_edits(ws: Ws) -> None:
    parent = post(ws, "a", ws.general, "thread")
    reply = post(ws, "b", ws.general, "reply", thread_ts=parent)
    react(ws, "a", ws.general, reply, "100")
    thread = ws.as_("c").conversations_replies(channel=ws.general, ts=parent)["messages"]
    assert [m.get("reactions") for m in thread] == [
        None, [{"name": "100", "users": [ws.a["id"]], "count": 1}]]
    dm = ws.as_("a").chat_postMessage(channel=ws.c["id"], text="dm")
    react(ws, "c", dm["channel"], dm["ts"], "+1")
    assert shown(ws, dm["channel"], dm["ts"])["reactions"][0]["name"] == "+1"
    edited = ws.as_("a").chat_update(channel=ws.general, ts=parent, text="thread, edited")
    assert "reactions" not in edited["message"]
    react(ws, "b", ws.general, parent, "heart")
    edited = ws.as_("a").chat_update(channel=ws.general, ts=parent, text="again")
    assert edited["message"]["reactions"] == [
        {"name": "heart", "users": [ws.b["id"]], "count": 1}]


def test_limits_per_person_and_per_message(ws: Ws) -> None:
    ts = post(ws, "a", ws.general)
    names = [f"e{i}" for i in range(51)]
    for name in names[:23]:
        react(ws, "a", ws.general, ts, name)
    refused(ws, "too_many_reactions", lambda: ws.as_("a").reactions_add(
        channel=ws.general, timestamp=ts, name=names[23]))
    for name in names[23:46]:
        react(ws, "b", ws.general, ts, name)
    for name in names[46:50]:
        react(ws, "c", ws.general, ts, name)
    refused(ws, "too_many_emoji", lambda: ws.as_("admin").reactions_add(
        channel=ws.general, timestamp=ts, name=names[50]))
    react(ws, "admin", ws.general, ts, names[0])  # an emoji already there still counts up
    assert len(shown(ws, ws.general, ts)["reactions"]) == 50


def test_users_are_capped_unless_full(cluster: Cluster) -> None:
    seeded = cluster.seed(52)
    general = seeded["channels"][0]["id"]
    users = seeded["users"]
    ts = web(cluster, users[0]["token"]).chat_postMessage(channel=general, text="vote")["ts"]
    for user in users:
        web(cluster, user["token"]).reactions_add(channel=general, timestamp=ts, name="eyes")
    everyone = [u["id"] for u in users]
    client = web(cluster, users[1]["token"])
    [msg] = [m for m in history(cluster, users[1]["token"], general) if m["ts"] == ts]
    assert msg["reactions"] == [{"name": "eyes", "users": everyone[:50], "count": 52}]
    capped = client.reactions_get(channel=general, timestamp=ts)["message"]["reactions"]
    assert capped == msg["reactions"]
    full = client.reactions_get(channel=general, timestamp=ts, full=True)
    assert full["message"]["reactions"] == [{"name": "eyes", "users": everyone, "count": 52}]
    listed = client.reactions_list(user=users[0]["id"], full=True)["items"]
    assert listed[0]["message"]["reactions"][0]["users"] == everyone


def test_deleting_a_message_takes_its_reactions(ws: Ws) -> None:
    ts = post(ws, "admin", ws.general)
    react(ws, "admin", ws.general, ts, "wastebasket")
    ws.as_("admin").chat_delete(channel=ws.general, ts=ts)
    assert ts not in [i["message"]["ts"] for i in ws.as_("admin").reactions_list()["items"]]
    # a thread parent becomes a tombstone: its reactions go all the same
    parent = post(ws, "admin", ws.general, "parent")
    post(ws, "b", ws.general, "reply", thread_ts=parent)
    react(ws, "b", ws.general, parent, "skull")
    ws.as_("admin").chat_delete(channel=ws.general, ts=parent)
    tomb = shown(ws, ws.general, parent)
    assert tomb["subtype"] == "tombstone" and "reactions" not in tomb
    assert error_of(lambda: ws.as_("b").reactions_add(
        channel=ws.general, timestamp=parent, name="skull")) == "message_not_found"


# --- refusals ---------------------------------------------------------------------------------


def _refusals(ws: Ws, ts: str, archived_ts: str, method: str,
              ) -> list[tuple[str, Callable[[], Any]]]:
    """The bad inputs reactions.add and reactions.remove share, as (error, call)."""

    def call(who: str, **kw: Any) -> Callable[[], Any]:
        return lambda: ws.as_(who).api_call(method, json=kw)

    other = ws.other["channels"][0]["id"]
    return [
        ("no_item_specified", call("a", timestamp=ts, name="x")),
        ("no_item_specified", call("a", channel=ws.general, name="x")),
        ("invalid_arguments", call("a", channel=[ws.general], timestamp=ts, name="x")),
        ("bad_timestamp", call("a", channel=ws.general, timestamp="nope", name="x")),
        ("bad_timestamp", call("a", channel=ws.general, timestamp=[ts], name="x")),
        ("invalid_name", call("a", channel=ws.general, timestamp=ts)),
        ("invalid_name", call("a", channel=ws.general, timestamp=ts, name="Thumbs Up")),
        ("invalid_name", call("a", channel=ws.general, timestamp=ts, name="x::skin-tone-7")),
        ("invalid_arguments", call("a", channel=ws.general, timestamp=ts, name=["x"])),
        ("channel_not_found", call("a", channel="not-an-id", timestamp=ts, name="x")),
        ("channel_not_found", call("a", channel="C0NOSUCH00", timestamp=ts, name="x")),
        ("channel_not_found", call("a", channel=other, timestamp=ts, name="x")),
        ("channel_not_found", call("b", channel=ws.priv, timestamp=ts, name="x")),
        ("not_in_channel", call("b", channel=ws.pub, timestamp=ts, name="x")),
        ("is_archived", call("a", channel=ws.archived, timestamp=archived_ts, name="x")),
        ("message_not_found", call("a", channel=ws.general, timestamp="1000000000.000001",
                                   name="x")),
    ]


def test_add_refusals_change_nothing(ws: Ws) -> None:
    ts = post(ws, "a", ws.general)
    react(ws, "a", ws.general, ts, "done")
    archived_ts = history(ws.cluster, ws.a["token"], ws.archived)[0]["ts"]
    cases = _refusals(ws, ts, archived_ts, "reactions.add") + [
        ("already_reacted", lambda: ws.as_("a").reactions_add(
            channel=ws.general, timestamp=ts, name="done")),
    ]
    for expected, call in cases:
        refused(ws, expected, call)


def test_remove_refusals_change_nothing(ws: Ws) -> None:
    ts = post(ws, "a", ws.general)
    react(ws, "a", ws.general, ts, "done")
    archived_ts = history(ws.cluster, ws.a["token"], ws.archived)[0]["ts"]
    cases = _refusals(ws, ts, archived_ts, "reactions.remove") + [
        ("no_reaction", lambda: ws.as_("a").reactions_remove(
            channel=ws.general, timestamp=ts, name="other")),
        ("no_reaction", lambda: ws.as_("b").reactions_remove(  # someone else's
            channel=ws.general, timestamp=ts, name="done")),
    ]
    for expected, call in cases:
        refused(ws, expected, call)
    ws.as_("a").reactions_remove(channel=ws.general, timestamp=ts, name="done")
    refused(ws, "no_reaction", lambda: ws.as_("a").reactions_remove(
        channel=ws.general, timestamp=ts, name="done"))


def test_get_refusals(ws: Ws) -> None:
    ts = post(ws, "a", ws.priv)
    mine = post(ws, "a", ws.pub)
    other = ws.other["channels"][0]["id"]
    # a public channel reads for a non-member, as its history does
    assert ws.as_("b").reactions_get(channel=ws.pub, timestamp=mine)["message"]["ts"] == mine
    for expected, call in [
        ("channel_not_found", lambda: ws.as_("b").reactions_get(channel=ws.priv, timestamp=ts)),
        ("channel_not_found", lambda: ws.as_("a").reactions_get(channel=other, timestamp=ts)),
        ("message_not_found", lambda: ws.as_("a").reactions_get(
            channel=ws.general, timestamp="1000000000.000001")),
        ("no_item_specified", lambda: ws.as_("a").api_call(
            "reactions.get", json={"channel": ws.general})),
        ("bad_timestamp", lambda: ws.as_("a").reactions_get(channel=ws.general, timestamp="x")),
    ]:
        assert error_of(call) == expected


# --- reactions.list ---------------------------------------------------------------------------


def test_list_shows_what_the_caller_may_see_newest_first(cluster: Cluster) -> None:
    w = make_ws(cluster)
    dm = w.as_("a").chat_postMessage(channel=w.c["id"], text="dm")
    targets = [(w.general, post(w, "b", w.general, "g")), (w.pub, post(w, "a", w.pub, "p")),
               (w.priv, post(w, "a", w.priv, "q")), (dm["channel"], dm["ts"])]
    for channel, ts in targets:
        react(w, "a", channel, ts, "one")
    react(w, "a", w.general, targets[0][1], "two")  # one item however many reactions

    def listed(who: str, **kw: Any) -> list[tuple[str, str]]:
        items = w.as_(who).reactions_list(**kw)["items"]
        assert all(i["type"] == "message" for i in items)
        return [(i["channel"], i["message"]["ts"]) for i in items]

    newest_first = [targets[0], *reversed(targets[1:])]
    assert listed("a") == newest_first
    assert listed("b", user=w.a["id"]) == [targets[0], targets[1]]  # public only
    assert listed("c", user=w.a["id"]) == [targets[0], targets[3], targets[1]]  # and c's DM
    assert listed("b") == []
    item = w.as_("a").reactions_list()["items"][0]["message"]
    assert item["reactions"] == [{"name": "one", "users": [w.a["id"]], "count": 1},
                                 {"name": "two", "users": [w.a["id"]], "count": 1}]
    page = w.as_("a").reactions_list(count=3, page=2).data
    assert [(i["channel"], i["message"]["ts"]) for i in page["items"]] == newest_first[3:]
    assert page["paging"] == {"count": 3, "total": 4, "page": 2, "pages": 2}
    walked, cursor = [], None
    for _ in range(10):
        reply = w.as_("a").reactions_list(limit=1, **({"cursor": cursor} if cursor else {}))
        walked += [(i["channel"], i["message"]["ts"]) for i in reply["items"]]
        cursor = reply["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert walked == newest_first
    # slack_sdk's own iteration (it reuses one response object: take sizes as they come)
    sizes = [len(p["items"]) for p in w.as_("a").reactions_list(limit=3)]
    assert sizes == [3, 1]


def test_list_refusals(ws: Ws) -> None:
    for expected, call in [
        ("user_not_found", lambda: ws.as_("a").reactions_list(user=ws.other["users"][0]["id"])),
        ("user_not_found", lambda: ws.as_("a").reactions_list(user="not-a-user")),
        ("invalid_cursor", lambda: ws.as_("a").reactions_list(cursor="garbage")),
        ("invalid_arguments", lambda: ws.as_("a").api_call(
            "reactions.list", json={"count": "many"})),
    ]:
        assert error_of(call) == expected


# --- RTM: events reach members only ---------------------------------------------------------------


async def test_private_channel_reactions_reach_members_only(ws: Ws) -> None:
    ts = post(ws, "a", ws.priv)
    async with rtm_session(ws.cluster, ws.a["token"]) as a, \
            rtm_session(ws.cluster, ws.b["token"]) as b:
        await trio.to_thread.run_sync(lambda: react(ws, "a", ws.priv, ts, "secret"))
        added = await a.next({"type": "reaction_added"})
        await trio.to_thread.run_sync(lambda: ws.as_("a").reactions_remove(
            channel=ws.priv, timestamp=ts, name="secret"))
        await a.next({"type": "reaction_removed"})
        assert added["item"]["channel"] == ws.priv
        marker = await trio.to_thread.run_sync(lambda: post(ws, "a", ws.general, "marker"))
        await b.next({"type": "message", "ts": marker})
        assert not [e for e in b.seen if e.get("type", "").startswith("reaction_")]
