"""chat.scheduleMessage, chat.scheduledMessages.list and chat.deleteScheduledMessage through
slack_sdk against the running cluster: a due message is posted once, as its author, into
history and onto members' sockets; refused calls answer Slack's error and change nothing; a
message whose author may no longer post there is dropped; a post that committed before its
webapp died is not repeated; two webapps post each message exactly once."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trio
from slack_sdk import WebClient

from cluster import shards
from ops import cluster as ops_cluster
from tests.conftest import Cluster, rtm_session, start_cluster, stop_cluster
from tests.test_api_chat import (
    SECTION,
    Ws,
    _sql,
    error_of,
    event_log,
    history,
    make_ws,
    new_channel,
    web,
)

DAY = 86_400


@pytest.fixture(scope="module")
def ws(cluster: Cluster) -> Iterator[Ws]:
    yield make_ws(cluster)


def now() -> int:
    return int(time.time())


def pending(client: WebClient, **kwargs: Any) -> list[dict[str, Any]]:
    """Every scheduled message the client's user has waiting (all pages)."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.chat_scheduledMessages_list(cursor=cursor, **kwargs)
        out += page["scheduled_messages"]
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            return out


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``pred`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def texts(cluster: Cluster, token: str, channel: str, text: str) -> list[dict[str, Any]]:
    return [m for m in history(cluster, token, channel) if m["text"] == text]


def snapshot(ws: Ws) -> dict[str, Any]:
    """What a refused call must leave as it was: messages, events and schedules."""
    return {**ws.snapshot(), "scheduled": {who: pending(ws.as_(who)) for who in "abc"}}


def refused(ws: Ws, expected: str, call: Callable[[], Any]) -> None:
    before = snapshot(ws)
    assert error_of(call) == expected
    assert snapshot(ws) == before


# --- scheduling, listing, deleting -----------------------------------------------------------


def test_schedule_list_and_delete(ws: Ws) -> None:
    post_at = now() + 3600
    reply = ws.as_("a").chat_scheduleMessage(channel="#general", text="later", post_at=post_at,
                                             blocks=[SECTION])
    sid = reply["scheduled_message_id"]
    assert sid.startswith("Q") and reply["channel"] == ws.general
    assert reply["post_at"] == post_at
    assert reply["message"] == {"type": "delayed_message", "text": "later",
                                "user": ws.a["id"], "team": ws.team, "blocks": [SECTION]}
    listed = [m for m in pending(ws.as_("a")) if m["id"] == sid]
    assert len(listed) == 1
    entry = listed[0]
    assert (entry["channel_id"], entry["post_at"], entry["text"]) == (ws.general, post_at,
                                                                      "later")
    assert abs(entry["date_created"] - now()) < 60
    assert [m["id"] for m in pending(ws.as_("a"), channel=ws.general)] == [sid]
    assert pending(ws.as_("a"), channel=ws.pub) == []
    assert pending(ws.as_("b")) == []  # only the caller's own
    assert ws.as_("a").chat_deleteScheduledMessage(channel=ws.general,
                                                   scheduled_message_id=sid)["ok"]
    assert sid not in {m["id"] for m in pending(ws.as_("a"))}
    assert error_of(lambda: ws.as_("a").chat_deleteScheduledMessage(
        channel=ws.general, scheduled_message_id=sid)) == "invalid_scheduled_message_id"


def test_schedule_to_a_user_id_goes_to_the_dm(ws: Ws) -> None:
    reply = ws.as_("a").chat_scheduleMessage(channel=ws.c["id"], text="psst later",
                                             post_at=now() + 3600)
    dm = reply["channel"]
    assert dm.startswith("D")
    assert ws.as_("a").conversations_open(users=ws.c["id"])["channel"]["id"] == dm
    ws.as_("a").chat_deleteScheduledMessage(channel=dm,
                                            scheduled_message_id=reply["scheduled_message_id"])


def test_list_pages_in_post_at_order_and_filters(ws: Ws) -> None:
    channel = new_channel(ws.cluster, ws.a["token"])
    base = now() + 7200
    ids = [ws.as_("a").chat_scheduleMessage(channel=channel, text=f"m{i}",
                                            post_at=base + 10 * (4 - i))["scheduled_message_id"]
           for i in range(5)]
    by_time = list(reversed(ids))
    pages, cursor = [], None
    while True:
        page = ws.as_("a").chat_scheduledMessages_list(channel=channel, limit=2, cursor=cursor)
        pages.append([m["id"] for m in page["scheduled_messages"]])
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert pages == [by_time[0:2], by_time[2:4], by_time[4:]]
    window = ws.as_("a").chat_scheduledMessages_list(channel=channel, oldest=base + 10,
                                                     latest=base + 30)
    assert [m["id"] for m in window["scheduled_messages"]] == by_time[1:4]
    for sid in ids:
        ws.as_("a").chat_deleteScheduledMessage(channel=channel, scheduled_message_id=sid)
    assert pending(ws.as_("a"), channel=channel) == []


def test_list_refusals(ws: Ws) -> None:
    for expected, call in [
        ("invalid_channel", lambda: ws.as_("b").chat_scheduledMessages_list(channel=ws.priv)),
        ("invalid_channel", lambda: ws.as_("a").chat_scheduledMessages_list(
            channel=ws.other["channels"][0]["id"])),
        ("invalid_channel", lambda: ws.as_("a").chat_scheduledMessages_list(channel="nope")),
        ("invalid_cursor", lambda: ws.as_("a").chat_scheduledMessages_list(cursor="zzz")),
        ("invalid_arguments", lambda: ws.as_("a").chat_scheduledMessages_list(
            oldest="yesterday")),
        ("invalid_arguments", lambda: ws.as_("a").chat_scheduledMessages_list(limit="many")),
    ]:
        assert error_of(call) == expected


def test_restricted_too_many_in_five_minutes(ws: Ws) -> None:
    channel = new_channel(ws.cluster, ws.a["token"])
    post_at = now() + 2 * DAY
    for i in range(30):
        ws.as_("a").chat_scheduleMessage(channel=channel, text=f"n{i}", post_at=post_at + i)
    refused(ws, "restricted_too_many", lambda: ws.as_("a").chat_scheduleMessage(
        channel=channel, text="one too many", post_at=post_at + 60))
    # another window of the same channel still has room
    ws.as_("a").chat_scheduleMessage(channel=channel, text="later on", post_at=post_at + 900)
    assert len(pending(ws.as_("a"), channel=channel)) == 31


def bad_schedules(ws: Ws) -> list[tuple[str, str, dict[str, Any]]]:
    """(who, error, body) of calls Slack refuses; post_at is valid unless the case is
    about it."""
    soon = now() + 3600
    other = ws.other["channels"][0]["id"]
    return [
        ("a", "invalid_time", {"channel": ws.general, "text": "x"}),
        ("a", "invalid_time", {"channel": ws.general, "text": "x", "post_at": "tomorrow"}),
        ("a", "invalid_time", {"channel": ws.general, "text": "x", "post_at": [soon]}),
        ("a", "time_in_past", {"channel": ws.general, "text": "x", "post_at": now() - 60}),
        ("a", "time_too_far", {"channel": ws.general, "text": "x",
                               "post_at": now() + 121 * DAY}),
        ("a", "time_in_past", {"channel": ws.other["users"][0]["id"], "text": "x",
                               "post_at": now() - 60}),
        ("a", "no_text", {"channel": ws.general, "text": "", "post_at": soon}),
        ("a", "invalid_blocks", {"channel": ws.general, "blocks": [{"x": 1}],
                                 "post_at": soon}),
        ("a", "too_many_attachments", {"channel": ws.general, "post_at": soon,
                                       "attachments": [{"text": "a"}] * 101}),
        ("a", "msg_too_long", {"channel": ws.general, "text": "x" * 40_001, "post_at": soon}),
        ("a", "channel_not_found", {"text": "x", "post_at": soon}),
        ("a", "invalid_arguments", {"channel": ["C1"], "text": "x", "post_at": soon}),
        ("a", "channel_not_found", {"channel": "no-such-name", "text": "x", "post_at": soon}),
        ("b", "not_in_channel", {"channel": ws.pub, "text": "x", "post_at": soon}),
        ("b", "channel_not_found", {"channel": ws.priv, "text": "x", "post_at": soon}),
        ("b", "is_archived", {"channel": ws.archived, "text": "x", "post_at": soon}),
        ("a", "channel_not_found", {"channel": other, "text": "x", "post_at": soon}),
        ("a", "channel_not_found", {"channel": ws.other["users"][0]["id"], "text": "x",
                                    "post_at": soon}),
        ("a", "thread_not_found", {"channel": ws.general, "text": "x", "post_at": soon,
                                   "thread_ts": "1000000000.000001"}),
        ("a", "thread_not_found", {"channel": ws.general, "text": "x", "post_at": soon,
                                   "thread_ts": "yesterday"}),
        ("a", "invalid_arguments", {"channel": ws.general, "text": "x", "post_at": soon,
                                    "reply_broadcast": "maybe"}),
    ]


def test_bad_schedules_are_refused_and_change_nothing(ws: Ws) -> None:
    for who, expected, body in bad_schedules(ws):
        refused(ws, expected, lambda w=who, b=body: ws.as_(w).api_call(
            "chat.scheduleMessage", json=b))


def test_delete_refusals(ws: Ws) -> None:
    sid = ws.as_("a").chat_scheduleMessage(channel=ws.general, text="mine",
                                           post_at=now() + 3600)["scheduled_message_id"]
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("invalid_scheduled_message_id", lambda: ws.as_("b").chat_deleteScheduledMessage(
            channel=ws.general, scheduled_message_id=sid)),
        ("invalid_scheduled_message_id", lambda: ws.as_("a").chat_deleteScheduledMessage(
            channel=ws.pub, scheduled_message_id=sid)),
        ("invalid_scheduled_message_id", lambda: ws.as_("a").chat_deleteScheduledMessage(
            channel=ws.general, scheduled_message_id="Q" + "0" * 10)),
        ("invalid_scheduled_message_id", lambda: ws.as_("a").chat_deleteScheduledMessage(
            channel=ws.general, scheduled_message_id="nope")),
        ("invalid_scheduled_message_id", lambda: ws.as_("a").api_call(
            "chat.deleteScheduledMessage", json={"channel": ws.general})),
        ("invalid_scheduled_message_id", lambda: ws.as_("a").api_call(
            "chat.deleteScheduledMessage", json={"channel": ws.general,
                                                 "scheduled_message_id": [sid]})),
        ("channel_not_found", lambda: ws.as_("a").api_call(
            "chat.deleteScheduledMessage", json={"scheduled_message_id": sid})),
        ("channel_not_found", lambda: ws.as_("b").chat_deleteScheduledMessage(
            channel=ws.priv, scheduled_message_id=sid)),
        ("channel_not_found", lambda: web(ws.cluster, ws.other["users"][0]["token"])
         .chat_deleteScheduledMessage(channel=ws.general, scheduled_message_id=sid)),
    ]
    for expected, call in cases:
        refused(ws, expected, call)
    ws.as_("a").chat_deleteScheduledMessage(channel=ws.general, scheduled_message_id=sid)


# --- posting ---------------------------------------------------------------------------------


async def test_due_message_is_posted_once_to_history_and_sockets(ws: Ws) -> None:
    text = "scheduled " + secrets.token_hex(4)
    async with rtm_session(ws.cluster, ws.b["token"]) as rtm:
        reply = await trio.to_thread.run_sync(lambda: ws.as_("a").chat_scheduleMessage(
            channel=ws.general, text=text, post_at=now() + 2, blocks=[SECTION]))
        event = await rtm.next({"type": "message", "text": text}, timeout=20)
        # a later message on the same channel: had the scheduled one come twice, the
        # second copy would arrive before it (one channel's events come in order)
        marker = await trio.to_thread.run_sync(lambda: ws.as_("a").chat_postMessage(
            channel=ws.general, text="after " + text))
        await rtm.next({"type": "message", "ts": marker["ts"]})
    sid = reply["scheduled_message_id"]
    assert (event["user"], event["channel"], event["blocks"]) == (ws.a["id"], ws.general,
                                                                  [SECTION])
    assert event["client_msg_id"] == sid
    assert [e for e in rtm.seen if e.get("text") == text] == [event]
    stored = texts(ws.cluster, ws.b["token"], ws.general, text)
    assert [m["ts"] for m in stored] == [event["ts"]]
    posted = [e for e in event_log(ws.cluster, ws.general)
              if e["event"].get("text") == text]
    assert len(posted) == 1
    await trio.to_thread.run_sync(lambda: wait_until(
        lambda: sid not in {m["id"] for m in pending(ws.as_("a"))}, 10, "row deleted"))


def test_scheduled_thread_reply_with_broadcast(ws: Ws) -> None:
    parent = ws.as_("b").chat_postMessage(channel=ws.general, text="thread start")["ts"]
    text = "late reply " + secrets.token_hex(4)
    reply = ws.as_("a").chat_scheduleMessage(channel=ws.general, text=text, post_at=now() + 1,
                                             thread_ts=parent, reply_broadcast=True)
    assert reply["message"]["thread_ts"] == parent

    def replies() -> list[dict[str, Any]]:
        msgs = ws.as_("a").conversations_replies(channel=ws.general, ts=parent)["messages"]
        return [m for m in msgs if m["text"] == text]

    wait_until(lambda: bool(replies()), 20, "the reply posted")
    (posted,) = replies()
    assert posted["thread_ts"] == parent and posted["subtype"] == "thread_broadcast"
    assert [m["ts"] for m in texts(ws.cluster, ws.a["token"], ws.general, text)] == \
        [posted["ts"]]


def test_dropped_when_the_author_left_or_the_channel_was_archived(ws: Ws) -> None:
    left = new_channel(ws.cluster, ws.a["token"])
    ws.as_("b").conversations_join(channel=left)
    archived = new_channel(ws.cluster, ws.a["token"])
    soon = now() + 2
    gone = ws.as_("b").chat_scheduleMessage(channel=left, text="after I left", post_at=soon)
    frozen = ws.as_("a").chat_scheduleMessage(channel=archived, text="into the archive",
                                              post_at=soon)
    ws.as_("b").conversations_leave(channel=left)
    ws.as_("a").conversations_archive(channel=archived)
    wait_until(lambda: gone["scheduled_message_id"] not in {
        m["id"] for m in pending(ws.as_("b"))} and frozen["scheduled_message_id"] not in {
        m["id"] for m in pending(ws.as_("a"))}, 20, "both rows handled")
    assert texts(ws.cluster, ws.a["token"], left, "after I left") == []
    assert texts(ws.cluster, ws.a["token"], archived, "into the archive") == []


def test_a_post_that_committed_before_a_crash_is_not_repeated(ws: Ws) -> None:
    """The webapp died after the post committed and before it deleted the row, and its
    claim ran out: the next claimant finds the message by its client_msg_id."""
    sid = "Q" + secrets.token_hex(5).upper()
    text = "posted before the crash " + sid
    ws.as_("a").chat_postMessage(channel=ws.general, text=text, client_msg_id=sid)
    # the reply cache may be lost with the process too: the database alone must decide
    s = ws.cluster.settings
    client = redis.Redis.from_url(s.redis_url)
    client.delete(f"{s.redis_prefix}idem:{ws.a['id']}:{sid}")
    client.close()
    _sql(ws.cluster, s.db_name("chat", shards.shard_for(ws.general, s.chat_shards)),
         "INSERT INTO scheduled_messages (id, channel_id, user_id, post_at, date_created, "
         "text, claimed_until) VALUES (%s, %s, %s, %s, %s, %s, %s)",
         (sid, ws.general, ws.a["id"], now() - 5, now() - 60, text, 1))
    wait_until(lambda: sid not in {m["id"] for m in pending(ws.as_("a"))}, 20,
               "the row handled")
    assert len(texts(ws.cluster, ws.a["token"], ws.general, text)) == 1


# --- two webapps -----------------------------------------------------------------------------


def test_two_webapps_post_each_message_exactly_once(tmp_path: Path) -> None:
    """Both webapps poll every 0.1 s for the same due rows; the claims split them."""
    c = start_cluster(tmp_path, ops_cluster.Counts(webapps=2, channels=1, gateways=1),
                      scheduled_poll_interval_s=0.1)
    try:
        assert len(c.processes("webapp")) == 2
        seeded = c.seed(2)
        a, general = seeded["users"][0], seeded["channels"][0]["id"]
        due = now() + 2
        wanted = [f"once {i}" for i in range(20)]
        for text in wanted:
            web(c, a["token"]).chat_scheduleMessage(channel=general, text=text, post_at=due)
        wait_until(lambda: not pending(web(c, a["token"])), 30, "every row handled")
        stored = [m["text"] for m in history(c, a["token"], general) if m["text"] in wanted]
        assert sorted(stored) == sorted(wanted)
        posted = [e for e in event_log(c, general) if e["event"].get("text") in wanted]
        assert len(posted) == len(wanted)
    finally:
        stop_cluster(c)
