"""Topic, purpose and name changes leave Slack's system messages in the channel
(channel_topic / channel_purpose / channel_name, group_* in private channels): stored in
history with their own fields, badged by nobody, and delivered live to members only. A
refused change leaves no message."""

from __future__ import annotations

from typing import Any

from tests.conftest import gateway_of, rtm_session
from tests.test_api_conversations import (
    create,
    error_of,
    in_thread,
    nothing_more,
    raw,
    uname,
    web,
)


def history(cluster: Any, user: dict[str, Any], channel: str) -> list[dict[str, Any]]:
    return web(cluster, user).conversations_history(channel=channel)["messages"]


def notice(user: dict[str, Any], ts: str, team: str, subtype: str, text: str,
           **fields: str) -> dict[str, Any]:
    """A system message as history shows it."""
    return {"type": "message", "subtype": subtype, "user": user["id"], "ts": ts,
            "team": team, "text": text, **fields}


def test_history_shows_topic_purpose_and_name_notices(cluster):
    ws = cluster.seed(2)
    alice, bob = ws["users"]
    team = ws["team"]["id"]
    chan = create(cluster, alice)
    channel = chan["id"]
    web(cluster, bob).conversations_join(channel=channel)
    client = web(cluster, alice)
    client.conversations_setTopic(channel=channel, topic="hello world")
    client.conversations_setPurpose(channel=channel, purpose="why we are here")
    new = uname("renamed")
    client.conversations_rename(channel=channel, name=new)
    web(cluster, bob).conversations_setTopic(channel=channel, topic="")
    shown = history(cluster, bob, channel)
    ts = [m["ts"] for m in shown]
    me = f"<@{alice['id']}>"
    assert shown == [
        notice(bob, ts[0], team, "channel_topic", f"<@{bob['id']}> cleared the channel topic",
               topic=""),
        notice(alice, ts[1], team, "channel_name",
               f'{me} has renamed the channel from "{chan["name"]}" to "{new}"',
               old_name=chan["name"], name=new),
        notice(alice, ts[2], team, "channel_purpose",
               f"{me} set the channel purpose: why we are here", purpose="why we are here"),
        notice(alice, ts[3], team, "channel_topic", f"{me} set the channel topic: hello world",
               topic="hello world"),
    ]
    assert ts == sorted(ts, reverse=True)
    # nothing new to tell: the same topic, or a rename to the same name, adds no message
    web(cluster, bob).conversations_setTopic(channel=channel, topic="")
    client.conversations_rename(channel=channel, name=new)
    assert history(cluster, bob, channel) == shown
    # notices count as unread, but no client badges them
    info = web(cluster, bob).conversations_info(channel=channel)["channel"]
    assert (info["unread_count"], info["unread_count_display"]) == (4, 0)
    client.chat_postMessage(channel=channel, text="a real one")
    info = web(cluster, bob).conversations_info(channel=channel)["channel"]
    assert (info["unread_count"], info["unread_count_display"]) == (5, 1)
    # a system message is not the author's to edit
    assert error_of(client.chat_update, channel=channel, ts=ts[3],
                    text="forged") == "cant_update_message"


def test_private_channels_use_group_subtypes(cluster):
    ws = cluster.seed(3)
    alice, bob, carol = ws["users"]
    chan = create(cluster, alice, private=True)
    channel = chan["id"]
    client = web(cluster, alice)
    client.conversations_setTopic(channel=channel, topic="plans")
    client.conversations_setPurpose(channel=channel, purpose="secret")
    new = uname("hidden")
    client.conversations_rename(channel=channel, name=new)
    shown = history(cluster, alice, channel)
    me = f"<@{alice['id']}>"
    assert [(m["subtype"], m["text"]) for m in shown] == [
        ("group_name", f'{me} has renamed the group from "{chan["name"]}" to "{new}"'),
        ("group_purpose", f"{me} set the group purpose: secret"),
        ("group_topic", f"{me} set the group topic: plans"),
    ]
    assert (shown[0]["old_name"], shown[0]["name"]) == (chan["name"], new)
    assert shown[1]["purpose"] == "secret" and shown[2]["topic"] == "plans"
    # a group DM's topic is a group's too
    mpim = client.conversations_open(users=f"{bob['id']},{carol['id']}")["channel"]["id"]
    client.conversations_setTopic(channel=mpim, topic="lunch")
    assert [(m["subtype"], m["topic"]) for m in history(cluster, bob, mpim)] == [
        ("group_topic", "lunch")]


def test_refused_changes_leave_no_notice(cluster):
    ws, elsewhere = cluster.seed(3), cluster.seed(1)
    alice, bob, carol = ws["users"]
    chan = create(cluster, alice)
    channel = chan["id"]
    web(cluster, bob).conversations_join(channel=channel)
    taken = create(cluster, alice)
    client = web(cluster, alice)
    client.conversations_setTopic(channel=channel, topic="kept")
    before = history(cluster, alice, channel)
    assert error_of(client.conversations_setTopic, channel=channel,
                    topic="x" * 251) == "too_long"
    assert error_of(client.conversations_setPurpose, channel=channel,
                    purpose="x" * 251) == "too_long"
    assert error_of(web(cluster, carol).conversations_setTopic, channel=channel,
                    topic="no") == "not_in_channel"
    assert raw(cluster, "conversations.setTopic", alice, channel=channel)["error"] == \
        "invalid_arguments"
    assert raw(cluster, "conversations.setPurpose", alice, channel=channel,
               purpose={"x": 1})["error"] == "invalid_arguments"
    assert error_of(client.conversations_rename, channel=channel,
                    name=taken["name"]) == "name_taken"
    assert error_of(client.conversations_rename, channel=channel,
                    name="Bad Name") == "invalid_name_specials"
    assert error_of(web(cluster, bob).conversations_rename, channel=channel,
                    name=uname()) == "not_authorized"
    assert error_of(web(cluster, elsewhere["users"][0]).conversations_setTopic,
                    channel=channel, topic="intruder") == "channel_not_found"
    client.conversations_archive(channel=channel)
    assert error_of(client.conversations_setTopic, channel=channel,
                    topic="late") == "is_archived"
    assert error_of(client.conversations_setPurpose, channel=channel,
                    purpose="late") == "is_archived"
    assert history(cluster, alice, channel) == before
    info = client.conversations_info(channel=channel)["channel"]
    assert (info["name"], info["topic"]["value"]) == (chan["name"], "kept")


async def test_members_hear_notices_live_and_others_do_not(cluster):
    ws = cluster.seed(3)
    alice, bob, dave = ws["users"]
    priv = await in_thread(web(cluster, alice).conversations_create, name=uname(),
                           is_private=True)
    channel = priv["channel"]["id"]
    await in_thread(web(cluster, alice).conversations_invite, channel=channel, users=bob["id"])
    async with rtm_session(cluster, bob["token"]) as bob_rtm, rtm_session(
        cluster, dave["token"], gateway=gateway_of(bob_rtm)
    ) as dave_rtm:
        await in_thread(web(cluster, alice).conversations_setTopic, channel=channel,
                        topic="only for us")
        topic = await bob_rtm.next({"type": "message", "subtype": "group_topic"})
        assert (topic["channel"], topic["user"], topic["topic"], topic["stream"]) == (
            channel, alice["id"], "only for us", channel)
        assert topic["text"] == f"<@{alice['id']}> set the group topic: only for us"
        assert topic["event_ts"] == topic["ts"]
        new = uname("quiet")
        await in_thread(web(cluster, alice).conversations_rename, channel=channel, name=new)
        renamed = await bob_rtm.next({"type": "group_rename"})
        named = await bob_rtm.next({"type": "message", "subtype": "group_name"})
        # the rename event comes first, on the same stream, then the message naming it
        assert renamed["seq"] < named["seq"]
        assert (named["old_name"], named["name"]) == (priv["channel"]["name"], new)
        stored = await in_thread(history, cluster, bob, channel)
        assert [m["ts"] for m in stored] == [named["ts"], topic["ts"]]
        await nothing_more(dave_rtm, 5)
        assert not [e for e in dave_rtm.seen if channel in str(e) or "only for us" in str(e)]


async def test_public_channel_notices_reach_its_members(cluster):
    ws = cluster.seed(3)
    alice, bob, dave = ws["users"]
    chan = await in_thread(web(cluster, alice).conversations_create, name=uname())
    channel = chan["channel"]["id"]
    await in_thread(web(cluster, bob).conversations_join, channel=channel)
    async with rtm_session(cluster, bob["token"]) as bob_rtm, rtm_session(
        cluster, dave["token"], gateway=gateway_of(bob_rtm)
    ) as dave_rtm:
        await in_thread(web(cluster, alice).conversations_setPurpose, channel=channel,
                        purpose="public talk")
        purpose = await bob_rtm.next({"type": "message", "subtype": "channel_purpose"})
        assert (purpose["channel"], purpose["purpose"], purpose["user"]) == (
            channel, "public talk", alice["id"])
        new = uname("open")
        await in_thread(web(cluster, alice).conversations_rename, channel=channel, name=new)
        # the workspace hears of the rename; the message stays with the channel's members
        await dave_rtm.next({"type": "channel_rename"})
        named = await bob_rtm.next({"type": "message", "subtype": "channel_name"})
        assert named["name"] == new and named["stream"] == channel
        await nothing_more(dave_rtm, 6)
        assert not [e for e in dave_rtm.seen if e.get("type") == "message"]
