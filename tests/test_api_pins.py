"""pins.* through slack_sdk against the running cluster: add, remove and list, ``pinned_to``
and ``pin_count`` in history, pin_added / pin_removed to members only, and every refused call
answering Slack's error code while changing nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

from tests.conftest import Cluster, rtm_session
from tests.test_api_chat import Ws, error_of, history, make_ws, refused


@pytest.fixture(scope="module")
def ws(cluster: Cluster) -> Iterator[Ws]:
    yield make_ws(cluster)


def post(ws: Ws, who: str, channel: str, text: str = "pin me", **kw: Any) -> str:
    return ws.as_(who).chat_postMessage(channel=channel, text=text, **kw)["ts"]


def pin_count(ws: Ws, channel: str, who: str = "a") -> int:
    return ws.as_(who).conversations_history(channel=channel, limit=1)["pin_count"]


def shown(ws: Ws, channel: str, ts: str) -> dict[str, Any]:
    [found] = [m for m in history(ws.cluster, ws.a["token"], channel) if m["ts"] == ts]
    return found


async def test_add_emits_pin_added_and_shows_in_history_and_list(ws: Ws) -> None:
    channel = ws.pub
    first, second = post(ws, "a", channel, "first"), post(ws, "a", channel, "second")
    ws.as_("a").reactions_add(channel=channel, timestamp=first, name="pushpin")
    async with rtm_session(ws.cluster, ws.a["token"]) as rtm:
        reply = await trio.to_thread.run_sync(lambda: ws.as_("a").pins_add(
            channel=channel, timestamp=first))
        event = await rtm.next({"type": "pin_added"})
    assert set(reply.data) == {"ok"}
    assert (event["user"], event["channel_id"]) == (ws.a["id"], channel)
    item = event["item"]
    assert (item["type"], item["channel"], item["created_by"]) == ("message", channel, ws.a["id"])
    assert item["created"] == int(float(event["event_ts"]))
    assert item["message"]["ts"] == first and item["message"]["text"] == "first"
    assert item["message"]["pinned_to"] == [channel]
    assert item["message"]["reactions"] == [
        {"name": "pushpin", "users": [ws.a["id"]], "count": 1}]
    assert shown(ws, channel, first)["pinned_to"] == [channel]
    assert "pinned_to" not in shown(ws, channel, second)
    assert pin_count(ws, channel) == 1
    ws.as_("a").pins_add(channel=channel, timestamp=second)
    assert pin_count(ws, channel) == 2
    # anyone who may see a public channel may list its pins, newest pin first
    listed = ws.as_("b").pins_list(channel=channel)["items"]
    assert [i["message"]["ts"] for i in listed] == [second, first]
    assert listed[1] == item


async def test_remove_emits_pin_removed_and_unpins(ws: Ws) -> None:
    channel = ws.general
    one, two = post(ws, "b", channel, "one"), post(ws, "c", channel, "two")
    ws.as_("b").pins_add(channel=channel, timestamp=one)
    ws.as_("c").pins_add(channel=channel, timestamp=two)
    async with rtm_session(ws.cluster, ws.a["token"]) as rtm:
        await trio.to_thread.run_sync(lambda: ws.as_("a").pins_remove(  # any member may
            channel=channel, timestamp=one))
        removed = await rtm.next({"type": "pin_removed"})
        await trio.to_thread.run_sync(lambda: ws.as_("a").pins_remove(
            channel=channel, timestamp=two))
        last = await rtm.next({"type": "pin_removed"})
    assert (removed["user"], removed["channel_id"], removed["has_pins"]) == (
        ws.a["id"], channel, True)
    assert removed["item"]["created_by"] == ws.b["id"]
    assert removed["item"]["message"]["ts"] == one
    assert "pinned_to" not in removed["item"]["message"]
    assert last["has_pins"] is False
    assert pin_count(ws, channel) == 0
    assert ws.as_("a").pins_list(channel=channel)["items"] == []
    assert "pinned_to" not in shown(ws, channel, one)


def test_pins_of_replies_and_dms(ws: Ws) -> None:
    parent = post(ws, "a", ws.general, "thread")
    reply = post(ws, "b", ws.general, "reply", thread_ts=parent)
    ws.as_("b").pins_add(channel=ws.general, timestamp=reply)
    thread = ws.as_("c").conversations_replies(channel=ws.general, ts=parent)["messages"]
    assert [m.get("pinned_to") for m in thread] == [None, [ws.general]]
    dm = ws.as_("a").chat_postMessage(channel=ws.b["id"], text="dm")
    ws.as_("b").pins_add(channel=dm["channel"], timestamp=dm["ts"])
    assert pin_count(ws, dm["channel"], "b") == 1
    assert error_of(lambda: ws.as_("c").pins_list(channel=dm["channel"])) == \
        "channel_not_found"
    ws.as_("b").pins_remove(channel=ws.general, timestamp=reply)


def test_deleting_a_message_unpins_it(ws: Ws) -> None:
    ts = post(ws, "admin", ws.general, "soon gone")
    before = pin_count(ws, ws.general)
    ws.as_("admin").pins_add(channel=ws.general, timestamp=ts)
    assert pin_count(ws, ws.general) == before + 1
    ws.as_("admin").chat_delete(channel=ws.general, ts=ts)
    assert pin_count(ws, ws.general) == before
    assert ts not in [i["message"]["ts"] for i in ws.as_("a").pins_list(
        channel=ws.general)["items"]]


# --- refusals ---------------------------------------------------------------------------------


def _refusals(ws: Ws, ts: str, archived_ts: str, method: str,
              ) -> list[tuple[str, Callable[[], Any]]]:
    """The bad inputs pins.add and pins.remove share, as (error, call)."""

    def call(who: str, **kw: Any) -> Callable[[], Any]:
        return lambda: ws.as_(who).api_call(method, json=kw)

    other = ws.other["channels"][0]["id"]
    return [
        ("channel_not_found", call("a", timestamp=ts)),
        ("no_item_specified", call("a", channel=ws.general)),
        ("invalid_arguments", call("a", channel=[ws.general], timestamp=ts)),
        ("bad_timestamp", call("a", channel=ws.general, timestamp="nope")),
        ("bad_timestamp", call("a", channel=ws.general, timestamp={"ts": ts})),
        ("channel_not_found", call("a", channel="not-an-id", timestamp=ts)),
        ("channel_not_found", call("a", channel=other, timestamp=ts)),
        ("channel_not_found", call("b", channel=ws.priv, timestamp=ts)),
        ("not_in_channel", call("b", channel=ws.pub, timestamp=ts)),
        ("is_archived", call("a", channel=ws.archived, timestamp=archived_ts)),
        ("message_not_found", call("a", channel=ws.general, timestamp="1000000000.000001")),
    ]


def test_add_refusals_change_nothing(ws: Ws) -> None:
    ts = post(ws, "a", ws.general)
    ws.as_("a").pins_add(channel=ws.general, timestamp=ts)
    archived_ts = history(ws.cluster, ws.a["token"], ws.archived)[0]["ts"]
    cases = _refusals(ws, ts, archived_ts, "pins.add") + [
        ("already_pinned", lambda: ws.as_("b").pins_add(channel=ws.general, timestamp=ts)),
    ]
    for expected, call in cases:
        refused(ws, expected, call)
    ws.as_("a").pins_remove(channel=ws.general, timestamp=ts)


def test_remove_refusals_change_nothing(ws: Ws) -> None:
    ts = post(ws, "a", ws.general)
    archived_ts = history(ws.cluster, ws.a["token"], ws.archived)[0]["ts"]
    cases = _refusals(ws, ts, archived_ts, "pins.remove") + [
        ("no_pin", lambda: ws.as_("a").pins_remove(channel=ws.general, timestamp=ts)),
    ]
    for expected, call in cases:
        refused(ws, expected, call)
    ws.as_("a").pins_add(channel=ws.general, timestamp=ts)
    ws.as_("a").pins_remove(channel=ws.general, timestamp=ts)
    refused(ws, "no_pin", lambda: ws.as_("a").pins_remove(channel=ws.general, timestamp=ts))


def test_list_refusals(ws: Ws) -> None:
    other = ws.other["channels"][0]["id"]
    for expected, call in [
        ("channel_not_found", lambda: ws.as_("b").pins_list(channel=ws.priv)),
        ("channel_not_found", lambda: ws.as_("a").pins_list(channel=other)),
        ("channel_not_found", lambda: ws.as_("a").api_call("pins.list", json={})),
        ("invalid_arguments", lambda: ws.as_("a").api_call(
            "pins.list", json={"channel": 5})),
    ]:
        assert error_of(call) == expected


# --- RTM: events reach members only ---------------------------------------------------------------


async def test_private_channel_pins_reach_members_only(ws: Ws) -> None:
    ts = post(ws, "a", ws.priv)
    async with rtm_session(ws.cluster, ws.a["token"]) as a, \
            rtm_session(ws.cluster, ws.b["token"]) as b:
        await trio.to_thread.run_sync(lambda: ws.as_("a").pins_add(
            channel=ws.priv, timestamp=ts))
        await a.next({"type": "pin_added", "channel_id": ws.priv})
        await trio.to_thread.run_sync(lambda: ws.as_("a").pins_remove(
            channel=ws.priv, timestamp=ts))
        await a.next({"type": "pin_removed", "channel_id": ws.priv})
        marker = await trio.to_thread.run_sync(lambda: post(ws, "a", ws.general, "marker"))
        await b.next({"type": "message", "ts": marker})
        assert not [e for e in b.seen if e.get("type", "").startswith("pin_")]
