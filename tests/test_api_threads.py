"""Threads as Slack has them, through slack_sdk and RTM: a reply updates its parent's summary
and announces it (message_replied); history hides replies unless broadcast;
conversations.replies pages a thread; deleting a reply or a parent keeps the thread right."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

from tests.conftest import Cluster, rtm_session
from tests.test_api_chat import Ws, error_of, event_log, history, make_ws, refused, web


@pytest.fixture(scope="module")
def ws(cluster: Cluster) -> Iterator[Ws]:
    yield make_ws(cluster, users=7)


def replies(ws: Ws, who: str, channel: str, ts: str, **kw: Any) -> dict[str, Any]:
    return ws.as_(who).conversations_replies(channel=channel, ts=ts, **kw).data


def in_history(ws: Ws, ts: str) -> dict[str, Any] | None:
    return next((m for m in history(ws.cluster, ws.a["token"], ws.general) if m["ts"] == ts),
                None)


async def test_a_reply_updates_its_parent_and_emits_message_replied(ws: Ws) -> None:
    parent = ws.as_("a").chat_postMessage(channel=ws.general, text="parent")
    async with rtm_session(ws.cluster, ws.c["token"]) as rtm:
        reply = await trio.to_thread.run_sync(lambda: ws.as_("b").chat_postMessage(
            channel=ws.general, text="reply", thread_ts=parent["ts"]))
        got = await rtm.next({"type": "message", "ts": reply["ts"]})
        replied = await rtm.next({"type": "message", "subtype": "message_replied"})
    assert got["thread_ts"] == parent["ts"] and got["parent_user_id"] == ws.a["id"]
    assert reply["message"]["thread_ts"] == parent["ts"]
    assert reply["message"]["parent_user_id"] == ws.a["id"]
    assert replied["seq"] == got["seq"] + 1, "same transaction, same channel stream"
    assert replied["hidden"] is True and replied["channel"] == ws.general
    summary = {"thread_ts": parent["ts"], "reply_count": 1, "reply_users_count": 1,
               "reply_users": [ws.b["id"]], "latest_reply": reply["ts"]}
    assert {k: replied["message"][k] for k in summary} == summary
    assert replied["message"]["ts"] == parent["ts"] and replied["message"]["text"] == "parent"
    stored = in_history(ws, parent["ts"])
    assert stored is not None and {k: stored[k] for k in summary} == summary
    assert in_history(ws, reply["ts"]) is None, "replies stay in their thread"


def test_a_reply_to_a_reply_threads_under_the_parent(ws: Ws) -> None:
    parent = ws.as_("a").chat_postMessage(channel=ws.general, text="root")["ts"]
    first = ws.as_("b").chat_postMessage(channel=ws.general, text="1", thread_ts=parent)["ts"]
    second = ws.as_("c").chat_postMessage(channel=ws.general, text="2", thread_ts=first)
    assert second["message"]["thread_ts"] == parent
    assert [m["ts"] for m in replies(ws, "a", ws.general, parent)["messages"]] == [
        parent, first, second["ts"]]


async def test_broadcast_reply_shows_in_history_with_its_root(ws: Ws) -> None:
    parent = ws.as_("a").chat_postMessage(channel=ws.general, text="announce")["ts"]
    async with rtm_session(ws.cluster, ws.c["token"]) as rtm:
        reply = await trio.to_thread.run_sync(lambda: ws.as_("b").chat_postMessage(
            channel=ws.general, text="everyone look", thread_ts=parent, reply_broadcast=True))
        got = await rtm.next({"type": "message", "ts": reply["ts"]})
    assert got["subtype"] == "thread_broadcast" and got["thread_ts"] == parent
    assert got["root"]["ts"] == parent and got["root"]["reply_count"] == 1
    assert got["root"]["latest_reply"] == reply["ts"]
    stored = in_history(ws, reply["ts"])
    assert stored is not None and stored["subtype"] == "thread_broadcast"
    assert [m["ts"] for m in replies(ws, "c", ws.general, parent)["messages"]] == [
        parent, reply["ts"]]


def test_reply_users_lists_five_and_counts_all(ws: Ws) -> None:
    parent = ws.as_("a").chat_postMessage(channel=ws.general, text="poll")["ts"]
    repliers = ws.users[1:7]
    for user in [*repliers, repliers[0]]:
        web(ws.cluster, user["token"]).chat_postMessage(channel=ws.general, text="me",
                                                        thread_ts=parent)
    head = replies(ws, "a", ws.general, parent)["messages"][0]
    assert (head["reply_count"], head["reply_users_count"]) == (7, 6)
    assert head["reply_users"] == [u["id"] for u in repliers[:5]]


def test_conversations_replies_pages_the_thread(ws: Ws) -> None:
    parent = ws.as_("a").chat_postMessage(channel=ws.general, text="long thread")["ts"]
    posted = [ws.as_("b" if i % 2 else "c").chat_postMessage(
        channel=ws.general, text=f"r{i}", thread_ts=parent)["ts"] for i in range(7)]
    whole = replies(ws, "b", ws.general, parent)
    assert [m["ts"] for m in whole["messages"]] == [parent, *posted]
    assert whole["has_more"] is False and whole["response_metadata"]["next_cursor"] == ""
    head = whole["messages"][0]
    assert (head["reply_count"], head["reply_users_count"], head["latest_reply"]) == (
        7, 2, posted[-1])
    assert head["reply_users"] == [ws.c["id"], ws.b["id"]]  # in order of first reply
    # pages of three: the parent opens the first, then every reply exactly once, in order
    seen, cursor, pages = [], None, 0
    while True:
        page = replies(ws, "b", ws.general, parent, limit=3, cursor=cursor)
        pages += 1
        seen += [m["ts"] for m in page["messages"]]
        cursor = page["response_metadata"]["next_cursor"]
        assert page["has_more"] is bool(cursor)
        if not cursor:
            break
    assert seen == [parent, *posted] and pages == 3
    # a reply's ts names its whole thread; oldest/latest bound the replies
    assert [m["ts"] for m in replies(ws, "a", ws.general, posted[3])["messages"]] == [
        parent, *posted]
    window = replies(ws, "a", ws.general, parent, oldest=posted[1], latest=posted[4])
    assert [m["ts"] for m in window["messages"]] == [parent, posted[2], posted[3]]
    window = replies(ws, "a", ws.general, parent, oldest=posted[1], latest=posted[4],
                     inclusive=True)
    assert [m["ts"] for m in window["messages"]] == [parent, *posted[1:5]]
    lone = ws.as_("a").chat_postMessage(channel=ws.general, text="no thread")["ts"]
    only = replies(ws, "a", ws.general, lone)
    assert [m["ts"] for m in only["messages"]] == [lone] and "reply_count" not in \
        only["messages"][0]


def test_conversations_replies_refusals(ws: Ws) -> None:
    secret = ws.as_("a").chat_postMessage(channel=ws.priv, text="secret")["ts"]
    ws.as_("a").chat_postMessage(channel=ws.priv, text="secret reply", thread_ts=secret)
    parent = ws.as_("a").chat_postMessage(channel=ws.general, text="p")["ts"]
    for expected, kw in [
        ("thread_not_found", {"channel": ws.general, "ts": "1000000000.000001"}),
        ("thread_not_found", {"channel": ws.general, "ts": "tomorrow"}),
        ("thread_not_found", {"channel": ws.general}),
        ("thread_not_found", {"channel": ws.pub, "ts": parent}),
        ("channel_not_found", {"channel": ws.priv, "ts": secret}),
        ("channel_not_found", {"channel": ws.other["channels"][0]["id"], "ts": parent}),
        ("channel_not_found", {"ts": parent}),
        ("invalid_cursor", {"channel": ws.general, "ts": parent, "cursor": "garbage!"}),
        ("invalid_ts_oldest", {"channel": ws.general, "ts": parent, "oldest": "x"}),
        ("invalid_ts_latest", {"channel": ws.general, "ts": parent, "latest": "x"}),
        ("invalid_arguments", {"channel": ws.general, "ts": parent, "limit": "many"}),
    ]:
        assert error_of(lambda kw=kw: ws.as_("b").api_call(
            "conversations.replies", params=kw)) == expected, kw


def test_replies_in_refused_places_change_nothing(ws: Ws) -> None:
    parent = ws.as_("a").chat_postMessage(channel=ws.priv, text="private parent")["ts"]
    general_parent = ws.as_("a").chat_postMessage(channel=ws.general, text="gp")["ts"]
    refused(ws, "channel_not_found", lambda: ws.as_("b").chat_postMessage(
        channel=ws.priv, text="sneak", thread_ts=parent))
    refused(ws, "thread_not_found", lambda: ws.as_("a").chat_postMessage(
        channel=ws.pub, text="wrong channel", thread_ts=general_parent))
    refused(ws, "thread_not_found", lambda: ws.as_("a").api_call(
        "chat.postMessage", json={"channel": ws.general, "text": "x", "thread_ts": 12}))
    assert "reply_count" not in (in_history(ws, general_parent) or {})


async def test_deleting_replies_and_parents_keeps_the_thread_right(ws: Ws) -> None:
    parent = ws.as_("a").chat_postMessage(channel=ws.general, text="doomed parent")["ts"]
    r1 = ws.as_("b").chat_postMessage(channel=ws.general, text="r1", thread_ts=parent)["ts"]
    r2 = ws.as_("c").chat_postMessage(channel=ws.general, text="r2", thread_ts=parent)["ts"]
    async with rtm_session(ws.cluster, ws.b["token"]) as rtm:
        # a reply goes: the parent's summary shrinks, announced as message_changed
        await trio.to_thread.run_sync(lambda: ws.as_("c").chat_delete(channel=ws.general,
                                                                      ts=r2))
        gone = await rtm.next({"subtype": "message_deleted", "deleted_ts": r2})
        changed = await rtm.next({"subtype": "message_changed"})
        assert changed["seq"] == gone["seq"] + 1
        assert changed["message"]["ts"] == parent
        assert (changed["message"]["reply_count"], changed["message"]["reply_users"],
                changed["message"]["latest_reply"]) == (1, [ws.b["id"]], r1)
        assert changed["previous_message"]["reply_count"] == 2
        # the parent goes while a reply remains: a tombstone holds the thread
        await trio.to_thread.run_sync(lambda: ws.as_("a").chat_delete(channel=ws.general,
                                                                      ts=parent))
        tomb = await rtm.next({"subtype": "message_changed"})
        assert tomb["message"]["subtype"] == "tombstone"
        assert tomb["message"]["text"] == "This message was deleted."
        assert tomb["message"]["reply_count"] == 1 and tomb["message"]["hidden"] is True
        stored = in_history(ws, parent)
        assert stored is not None and stored["subtype"] == "tombstone"
        assert [m["ts"] for m in replies(ws, "c", ws.general, parent)["messages"]] == [
            parent, r1]
        for call in (lambda: ws.as_("a").chat_delete(channel=ws.general, ts=parent),
                     lambda: ws.as_("a").chat_update(channel=ws.general, ts=parent, text="x")):
            assert error_of(call) == "message_not_found"
        # its last reply goes: the tombstone goes with it
        await trio.to_thread.run_sync(lambda: ws.as_("b").chat_delete(channel=ws.general,
                                                                      ts=r1))
        await rtm.next({"subtype": "message_deleted", "deleted_ts": r1})
        last = await rtm.next({"subtype": "message_deleted", "deleted_ts": parent})
        assert last["previous_message"]["subtype"] == "tombstone"
    assert in_history(ws, parent) is None
    assert error_of(lambda: replies(ws, "a", ws.general, parent)) == "thread_not_found"


def test_editing_a_reply_keeps_it_in_its_thread(ws: Ws) -> None:
    parent = ws.as_("a").chat_postMessage(channel=ws.general, text="p")["ts"]
    reply = ws.as_("b").chat_postMessage(channel=ws.general, text="typo",
                                         thread_ts=parent)["ts"]
    edited = ws.as_("b").chat_update(channel=ws.general, ts=reply, text="fixed")["message"]
    assert (edited["thread_ts"], edited["parent_user_id"]) == (parent, ws.a["id"])
    thread = replies(ws, "c", ws.general, parent)["messages"]
    assert thread[1]["text"] == "fixed" and thread[1]["edited"]["user"] == ws.b["id"]
    assert thread[0]["reply_count"] == 1
    logged = [e["event"] for e in event_log(ws.cluster, ws.general)]
    assert logged[-1]["subtype"] == "message_changed"
