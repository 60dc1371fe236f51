"""rtm.start (Slack's deprecated start, still used by older clients) through slack_sdk: the
ticket and url of rtm.connect, plus the workspace snapshot (self, team, users, bots,
channels, groups, ims, mpims, subteams) exactly as the list methods give them, limited to
what the caller may see; its url opens a socket that says hello."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.conftest import RtmSession
from tests.test_api_users import error_of, raw, web


@pytest.fixture(scope="module")
def ws(cluster: Any) -> dict[str, Any]:
    """Three users and a bot; alice (user1) is in a private channel, a DM with bob and a
    group DM with bob and carol; bob created a public channel alice is not in."""
    ws = cluster.seed(3)
    alice, bob, carol = ws["users"]
    a, b = web(cluster, alice["token"]), web(cluster, bob["token"])
    ws["private"] = a.conversations_create(name="rs-priv-" + secrets.token_hex(3),
                                           is_private=True)["channel"]["id"]
    ws["public"] = b.conversations_create(name="rs-pub-" + secrets.token_hex(3))["channel"]["id"]
    ws["dm"] = a.conversations_open(users=bob["id"])["channel"]["id"]
    ws["mpim"] = a.conversations_open(users=[bob["id"], carol["id"]])["channel"]["id"]
    group = a.usergroups_create(name="Start " + secrets.token_hex(3))["usergroup"]
    a.usergroups_users_update(usergroup=group["id"], users=[alice["id"]])
    ws["group"] = group["id"]
    return ws


@pytest.fixture(scope="module")
def other(cluster: Any) -> dict[str, Any]:
    return cluster.seed(1)


def _ids(items: list[dict[str, Any]]) -> set[str]:
    return {i["id"] for i in items}


def test_rtm_start_snapshot(cluster, ws, other):
    alice, bob = ws["users"][0], ws["users"][1]
    client = web(cluster, alice["token"])
    start = client.rtm_start()
    assert start["url"].startswith("ws://") and "/rtm?ticket=" in start["url"]
    me = start["self"]
    assert me["id"] == alice["id"] and me["name"] == alice["name"]
    assert me["prefs"] == client.api_call("users.prefs.get")["prefs"]
    assert isinstance(me["created"], int) and me["manual_presence"] == "active"
    assert start["team"] == client.team_info()["team"]

    # users and bots: users.list's objects, of this workspace only
    listed = client.users_list()["members"]
    assert sorted(start["users"], key=lambda u: u["id"]) == sorted(listed,
                                                                   key=lambda u: u["id"])
    assert other["users"][0]["id"] not in _ids(start["users"])
    assert [b["id"] for b in start["bots"]] == [ws["bot"]["bot_id"]]
    assert start["bots"][0] == client.bots_info(bot=ws["bot"]["bot_id"])["bot"]

    # conversations: public ones with is_member; private, DMs and group DMs of the caller
    channels = {c["id"]: c for c in start["channels"]}
    assert set(channels) == {ws["channels"][0]["id"], ws["public"]}
    assert channels[ws["channels"][0]["id"]]["is_member"] is True
    assert channels[ws["channels"][0]["id"]]["is_general"] is True
    assert channels[ws["public"]]["is_member"] is False
    listed = {c["id"]: c for c in client.conversations_list(
        types="public_channel,private_channel,mpim,im")["channels"]}
    assert channels[ws["public"]] == listed[ws["public"]]
    # not mpim_aware: the group DM is among the groups, as Slack gives it to old clients
    assert _ids(start["groups"]) == {ws["private"], ws["mpim"]}
    assert start["mpims"] == []
    assert [(i["id"], i["user"]) for i in start["ims"]] == [(ws["dm"], bob["id"])]
    assert start["ims"][0] == listed[ws["dm"]]

    assert start["subteams"]["self"] == [ws["group"]]
    assert ws["group"] in _ids(start["subteams"]["all"])
    assert start["dnd"]["dnd_enabled"] is False
    assert isinstance(start["cache_ts"], int) and "." in start["latest_event_ts"]


def test_rtm_start_flags(cluster, ws):
    carol = ws["users"][2]
    client = web(cluster, carol["token"])
    start = client.rtm_start(mpim_aware=True, include_locale=True, no_unreads=True,
                             no_latest=True, simple_latest=True, presence_sub=True,
                             batch_presence_aware=False)
    # carol is in the group DM only: no private channel, no DM; not in the usergroup
    assert _ids(start["mpims"]) == {ws["mpim"]} and start["groups"] == []
    assert start["ims"] == [] and start["subteams"]["self"] == []
    assert all(u["locale"] == "en-US" for u in start["users"])
    assert {c["id"]: c["is_member"] for c in start["channels"]} == {
        ws["channels"][0]["id"]: True, ws["public"]: False}


def test_rtm_start_bad_inputs(cluster, ws):
    token = ws["users"][1]["token"]
    for body in ({"mpim_aware": "sometimes"}, {"include_locale": [1]},
                 {"no_unreads": "x"}, {"presence_sub": {"a": 1}},
                 {"resume": "not json"}, {"resume": [1, 2]}):
        assert raw(cluster, "rtm.start", token, **body)["error"] == "invalid_arguments", body
    assert raw(cluster, "rtm.start", "xoxp-nobody")["error"] == "invalid_auth"
    client = web(cluster, token)
    client.token = None
    assert error_of(client.rtm_start) == "not_authed"


async def test_rtm_start_url_says_hello(cluster, ws):
    alice, bob = ws["users"][0], ws["users"][1]
    start = await trio.to_thread.run_sync(lambda: web(cluster, alice["token"]).rtm_start())
    async with open_websocket_url(start["url"]) as sock:
        session = RtmSession(sock, start["url"])
        await session.next({"type": "hello"})
        # a live socket: a message in the DM reaches it
        await trio.to_thread.run_sync(lambda: web(cluster, bob["token"]).chat_postMessage(
            channel=ws["dm"], text="hello from rtm.start"))
        got = await session.next({"type": "message", "channel": ws["dm"]})
        assert got["text"] == "hello from rtm.start" and got["user"] == bob["id"]
    # the ticket is single use, as rtm.connect's
    with pytest.raises(ConnectionRejected):
        async with open_websocket_url(start["url"]):
            pass
