"""conversations.* through slack_sdk against the running cluster: each method's happy path
and its bad inputs (missing, wrong-typed, another workspace's, not a member, archived), with
Slack's exact error codes; refused calls change nothing. RTM: lifecycle events reach those
who may see them, and nobody else."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.conftest import api_call, gateway_of, rtm_session

NEVER_READ = "0000000000.000000"


# --- helpers (test_api_dms.py uses them too) ------------------------------------------------


def web(cluster: Any, user: dict[str, Any]) -> WebClient:
    return WebClient(token=user["token"], base_url=cluster.api)


def error_of(fn: Callable[..., Any], **kwargs: Any) -> str:
    with pytest.raises(SlackApiError) as exc:
        fn(**kwargs)
    return str(exc.value.response["error"])


def raw(cluster: Any, method: str, caller: dict[str, Any], /, **body: Any) -> dict[str, Any]:
    """A JSON-bodied call (for wrongly typed arguments slack_sdk would not send)."""
    resp = api_call(cluster, method, caller["token"], **body)
    assert resp.status_code == 200
    return resp.json()


def uname(prefix: str = "c") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def create(cluster: Any, user: dict[str, Any], private: bool = False,
           name: str | None = None) -> dict[str, Any]:
    return web(cluster, user).conversations_create(name=name or uname(),
                                                   is_private=private)["channel"]


def member_ids(cluster: Any, user: dict[str, Any], channel: str) -> list[str]:
    return web(cluster, user).conversations_members(channel=channel, limit=1000)["members"]


def listed(cluster: Any, user: dict[str, Any], cursor: str | None = None, **kwargs: Any
           ) -> list[dict[str, Any]]:
    """Every page of conversations.list (from ``cursor``)."""
    out: list[dict[str, Any]] = []
    while True:
        page = web(cluster, user).conversations_list(cursor=cursor, **kwargs)
        out += page["channels"]
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            return out


async def in_thread(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


async def nothing_more(session: Any, ping_id: int) -> None:
    """A ping round trip: the gateway queues its pong behind anything it already pushed
    to this socket, so what has not arrived by then was not delivered."""
    await session.send({"type": "ping", "id": ping_id})
    await session.next({"type": "pong", "reply_to": ping_id})


@pytest.fixture(scope="module")
def ws(cluster: Any) -> dict[str, Any]:
    return cluster.seed(4)


@pytest.fixture(scope="module")
def other(cluster: Any) -> dict[str, Any]:
    return cluster.seed(2)


# --- conversations.info ---------------------------------------------------------------------


def test_info_carries_read_state_counts_and_general(cluster, ws):
    alice, bob = ws["users"][0], ws["users"][1]
    chan = create(cluster, alice)
    web(cluster, bob).conversations_join(channel=chan["id"])
    own = web(cluster, alice).chat_postMessage(channel=chan["id"], text="mine")
    first = web(cluster, bob).chat_postMessage(channel=chan["id"], text="one")
    web(cluster, bob).chat_postMessage(channel=chan["id"], text="reply", thread_ts=first["ts"])
    last = web(cluster, bob).chat_postMessage(channel=chan["id"], text="two")
    info = web(cluster, alice).conversations_info(channel=chan["id"],
                                                  include_num_members=True)["channel"]
    assert info["last_read"] == NEVER_READ
    # three top-level messages; the thread reply is not counted; display skips alice's own
    assert (info["unread_count"], info["unread_count_display"]) == (3, 2)
    assert info["num_members"] == 2 and info["is_member"] is True
    assert info["is_general"] is False and info["name"] == chan["name"]
    assert info["topic"] == {"value": "", "creator": "", "last_set": 0}
    for key in ("unlinked", "name_normalized", "is_pending_ext_shared", "pending_shared",
                "parent_conversation", "updated", "previous_names", "is_channel", "is_group"):
        assert key in info, key
    web(cluster, alice).conversations_mark(channel=chan["id"], ts=own["ts"])
    info = web(cluster, alice).conversations_info(channel=chan["id"])["channel"]
    assert (info["last_read"], info["unread_count"], info["unread_count_display"]) == (
        own["ts"], 2, 2)
    assert "num_members" not in info
    web(cluster, alice).conversations_mark(channel=chan["id"], ts=last["ts"])
    info = web(cluster, alice).conversations_info(channel=chan["id"])["channel"]
    assert (info["unread_count"], info["unread_count_display"]) == (0, 0)
    general = web(cluster, bob).conversations_info(channel=ws["channels"][0]["id"])["channel"]
    assert general["is_general"] is True and general["is_channel"] is True


def test_info_non_member_and_bad_inputs(cluster, ws, other):
    alice, carol = ws["users"][0], ws["users"][2]
    pub, priv = create(cluster, alice), create(cluster, alice, private=True)
    info = web(cluster, carol).conversations_info(channel=pub["id"])["channel"]
    assert info["is_member"] is False and "last_read" not in info
    assert "unread_count" not in info
    client = web(cluster, carol)
    for method in (client.conversations_info, client.conversations_history,
                   client.conversations_members, client.conversations_join):
        assert error_of(method, channel=priv["id"]) == "channel_not_found", method
    assert priv["id"] not in {c["id"] for c in listed(
        cluster, carol, types="public_channel,private_channel,mpim,im")}
    assert member_ids(cluster, alice, priv["id"]) == [alice["id"]]
    assert error_of(client.conversations_info,
                    channel=other["channels"][0]["id"]) == "channel_not_found"
    assert error_of(client.conversations_info, channel="nope") == "channel_not_found"
    assert raw(cluster, "conversations.info", carol) == {"ok": False,
                                                        "error": "channel_not_found"}
    assert raw(cluster, "conversations.info", carol, channel=[pub["id"]])["error"] == \
        "invalid_arguments"
    assert raw(cluster, "conversations.info", carol, channel=pub["id"],
               include_num_members="maybe")["error"] == "invalid_arguments"


# --- conversations.list ---------------------------------------------------------------------


def test_list_types_membership_and_privacy(cluster, other):
    team = cluster.seed(4)
    alice, bob, carol, dave = team["users"]
    general = team["channels"][0]["id"]
    pub = create(cluster, bob)
    mine = create(cluster, alice, private=True)
    theirs = create(cluster, bob, private=True)
    archived = create(cluster, alice)
    web(cluster, alice).conversations_archive(channel=archived["id"])
    im = web(cluster, alice).conversations_open(users=bob["id"])["channel"]["id"]
    mpim = web(cluster, alice).conversations_open(
        users=f"{bob['id']},{carol['id']}")["channel"]["id"]
    default = listed(cluster, alice)
    assert {c["id"] for c in default} == {general, pub["id"], archived["id"]}
    assert {c["id"]: c["is_member"] for c in default} == {
        general: True, pub["id"]: False, archived["id"]: True}
    assert next(c for c in default if c["id"] == general)["num_members"] == 5  # + the bot
    assert [c["id"] for c in default] == sorted(c["id"] for c in default)
    assert {c["id"] for c in listed(cluster, alice, exclude_archived=True)} == {
        general, pub["id"]}
    private = listed(cluster, alice, types="private_channel")
    assert [c["id"] for c in private] == [mine["id"]]
    assert private[0]["is_private"] is True and private[0]["is_member"] is True
    mpims = listed(cluster, alice, types="mpim")
    assert [c["id"] for c in mpims] == [mpim]
    assert mpims[0]["is_mpim"] is True and mpims[0]["is_open"] is True
    assert mpims[0]["num_members"] == 3 and mpims[0]["name"].startswith("mpdm-")
    ims = listed(cluster, alice, types="im")
    assert [(c["id"], c["user"], c["is_im"], c["is_user_deleted"]) for c in ims] == [
        (im, bob["id"], True, False)]
    everything = listed(cluster, alice, types="public_channel,private_channel,mpim,im")
    assert {c["id"] for c in everything} == {general, pub["id"], archived["id"], mine["id"],
                                             mpim, im}
    # bob's private channel and the DMs of others never show
    assert theirs["id"] not in {c["id"] for c in everything}
    dave_sees = listed(cluster, dave, types="public_channel,private_channel,mpim,im")
    assert {c["id"] for c in dave_sees} == {general, pub["id"], archived["id"]}
    assert not {c["id"] for c in listed(cluster, other["users"][0],
                                        types="public_channel,private_channel")} & {
        c["id"] for c in everything}


def test_list_pages_with_a_stable_cursor(cluster):
    team = cluster.seed(2)
    alice = team["users"][0]
    made = {create(cluster, alice)["id"] for _ in range(11)}
    made |= {create(cluster, alice, private=True)["id"] for _ in range(3)}
    types = "public_channel,private_channel"
    pages, cursor = [], None
    while True:
        page = web(cluster, alice).conversations_list(types=types, limit=4, cursor=cursor)
        pages.append([c["id"] for c in page["channels"]])
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    flat = [c for p in pages for c in p]
    assert [len(p) for p in pages] == [4, 4, 4, 3]
    assert flat == sorted(flat) and len(set(flat)) == len(flat)
    assert set(flat) == made | {team["channels"][0]["id"]}
    # a channel created mid-way after the cursor's position still shows on a later page
    first = web(cluster, alice).conversations_list(types=types, limit=2)
    rest = listed(cluster, alice, types=types,
                  cursor=first["response_metadata"]["next_cursor"], limit=1000)
    assert [c["id"] for c in first["channels"]] + [c["id"] for c in rest] == flat


def test_list_bad_inputs(cluster, ws):
    alice = ws["users"][0]
    client = web(cluster, alice)
    assert error_of(client.conversations_list, types="public_channel,bogus") == "invalid_types"
    assert error_of(client.conversations_list, types=",") == "invalid_types"
    assert error_of(client.conversations_list, cursor="bm9wZQ==") == "invalid_cursor"
    assert error_of(client.conversations_list, cursor="%%%") == "invalid_cursor"
    assert raw(cluster, "conversations.list", alice, limit="many")["error"] == "invalid_limit"
    assert raw(cluster, "conversations.list", alice, types=7)["error"] == "invalid_arguments"
    assert raw(cluster, "conversations.list", alice, exclude_archived="x")["error"] == \
        "invalid_arguments"
    # limit is clamped as Slack clamps it; team_id is accepted
    page = raw(cluster, "conversations.list", alice, limit=0, team_id=ws["team"]["id"])
    assert page["ok"] and len(page["channels"]) == 1


# --- conversations.members ------------------------------------------------------------------


def test_members_pages_and_privacy(cluster, ws, other):
    alice, bob, carol = ws["users"][:3]
    general = ws["channels"][0]["id"]
    everyone = sorted([u["id"] for u in ws["users"]] + [ws["bot"]["id"]])
    pages, cursor = [], None
    while True:
        page = web(cluster, carol).conversations_members(channel=general, limit=2,
                                                         cursor=cursor)
        pages.append(page["members"])
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert [m for p in pages for m in p] == everyone and [len(p) for p in pages] == [2, 2, 1]
    priv = create(cluster, alice, private=True)
    web(cluster, alice).conversations_invite(channel=priv["id"], users=bob["id"])
    assert member_ids(cluster, bob, priv["id"]) == sorted([alice["id"], bob["id"]])
    client = web(cluster, carol)
    assert error_of(client.conversations_members, channel=priv["id"]) == "channel_not_found"
    assert error_of(client.conversations_members,
                    channel=other["channels"][0]["id"]) == "channel_not_found"
    assert error_of(client.conversations_members, channel=general,
                    cursor="garbage!") == "invalid_cursor"
    assert raw(cluster, "conversations.members", carol)["error"] == "channel_not_found"
    assert raw(cluster, "conversations.members", carol, channel=general,
               limit=[1])["error"] == "invalid_limit"


# --- conversations.invite -------------------------------------------------------------------


def test_invite_adds_members_and_refuses_bad_users_whole(cluster, ws, other):
    alice, bob, carol, dave = ws["users"]
    priv = create(cluster, alice, private=True)
    client = web(cluster, alice)

    def refused(users: Any, expect: str) -> None:
        before = member_ids(cluster, alice, priv["id"])
        assert error_of(client.conversations_invite, channel=priv["id"], users=users) == expect
        assert member_ids(cluster, alice, priv["id"]) == before

    refused(alice["id"], "cant_invite_self")
    refused(f"{bob['id']},{other['users'][0]['id']}", "user_not_found")
    refused(f"{bob['id']},UNOBODY00", "user_not_found")
    refused("not-a-user", "user_not_found")
    refused(f"{bob['id']},{alice['id']}", "cant_invite_self")
    assert raw(cluster, "conversations.invite", alice, channel=priv["id"])["error"] == "no_user"
    assert raw(cluster, "conversations.invite", alice, channel=priv["id"],
               users=[1, 2])["error"] == "invalid_arguments"
    reply = client.conversations_invite(channel=priv["id"], users=f"{bob['id']},{carol['id']}")
    assert reply["channel"]["id"] == priv["id"] and reply["channel"]["num_members"] == 3
    assert member_ids(cluster, alice, priv["id"]) == sorted([alice["id"], bob["id"],
                                                             carol["id"]])
    body = raw(cluster, "conversations.invite", alice, channel=priv["id"],
               users=f"{dave['id']},{bob['id']}")
    assert body["error"] == "already_in_channel"
    assert body["errors"] == [{"user": bob["id"], "ok": False, "error": "already_in_channel"}]
    assert dave["id"] not in member_ids(cluster, alice, priv["id"])
    # dave cannot see it, so cannot invite into it; into a public one he is not in: not_in_channel
    assert error_of(web(cluster, dave).conversations_invite, channel=priv["id"],
                    users=bob["id"]) == "channel_not_found"
    pub = create(cluster, alice)
    assert error_of(web(cluster, dave).conversations_invite, channel=pub["id"],
                    users=bob["id"]) == "not_in_channel"
    client.conversations_archive(channel=pub["id"])
    assert error_of(client.conversations_invite, channel=pub["id"],
                    users=bob["id"]) == "is_archived"
    assert error_of(client.conversations_invite, channel=other["channels"][0]["id"],
                    users=bob["id"]) == "channel_not_found"


# --- conversations.kick / leave -------------------------------------------------------------


def test_kick_rules(cluster, ws, other):
    alice, bob, carol, dave = ws["users"]
    general = ws["channels"][0]["id"]
    chan = create(cluster, alice)
    client = web(cluster, alice)
    client.conversations_invite(channel=chan["id"], users=bob["id"])

    def refused(kicker: dict[str, Any], expect: str, **kwargs: Any) -> None:
        before = member_ids(cluster, alice, kwargs.get("channel", chan["id"]))
        assert error_of(web(cluster, kicker).conversations_kick,
                        **{"channel": chan["id"], **kwargs}) == expect
        assert member_ids(cluster, alice, kwargs.get("channel", chan["id"])) == before

    refused(alice, "cant_kick_self", user=alice["id"])
    refused(alice, "cant_kick_from_general", channel=general, user=bob["id"])
    refused(alice, "not_in_channel", user=carol["id"])
    refused(alice, "user_not_found", user=other["users"][0]["id"])
    refused(alice, "user_not_found", user="nobody")
    refused(dave, "not_in_channel", user=bob["id"])
    assert raw(cluster, "conversations.kick", alice, channel=chan["id"])["error"] == \
        "user_not_found"
    assert raw(cluster, "conversations.kick", alice, channel=chan["id"],
               user=[bob["id"]])["error"] == "user_not_found"
    assert client.conversations_kick(channel=chan["id"], user=bob["id"])["ok"]
    assert member_ids(cluster, alice, chan["id"]) == [alice["id"]]
    assert error_of(client.conversations_kick, channel=chan["id"],
                    user=bob["id"]) == "not_in_channel"


def test_leave_rules(cluster, ws, other):
    alice, bob = ws["users"][:2]
    general = ws["channels"][0]["id"]
    chan = create(cluster, alice)
    web(cluster, bob).conversations_join(channel=chan["id"])
    reply = web(cluster, bob).conversations_leave(channel=chan["id"])
    assert reply.data == {"ok": True}
    assert member_ids(cluster, alice, chan["id"]) == [alice["id"]]
    again = web(cluster, bob).conversations_leave(channel=chan["id"])
    assert again.data == {"ok": True, "not_in_channel": True}
    client = web(cluster, bob)
    assert error_of(client.conversations_leave, channel=general) == "cant_leave_general"
    priv = create(cluster, alice, private=True)
    assert error_of(client.conversations_leave, channel=priv["id"]) == "channel_not_found"
    assert error_of(client.conversations_leave,
                    channel=other["channels"][0]["id"]) == "channel_not_found"
    web(cluster, bob).conversations_join(channel=chan["id"])
    web(cluster, alice).conversations_archive(channel=chan["id"])
    assert error_of(client.conversations_leave, channel=chan["id"]) == "is_archived"
    assert bob["id"] in member_ids(cluster, alice, chan["id"])
    assert raw(cluster, "conversations.leave", bob)["error"] == "channel_not_found"
    # a channel left can no longer be written to; its history still reads (public)
    web(cluster, alice).conversations_unarchive(channel=chan["id"])
    web(cluster, bob).conversations_leave(channel=chan["id"])
    assert error_of(client.chat_postMessage, channel=chan["id"], text="x") == "not_in_channel"


# --- archive / unarchive --------------------------------------------------------------------


def test_archive_and_unarchive(cluster, ws, other):
    alice, bob, carol = ws["users"][:3]
    general = ws["channels"][0]["id"]
    chan = create(cluster, alice)
    web(cluster, bob).conversations_join(channel=chan["id"])
    client = web(cluster, alice)
    assert error_of(client.conversations_unarchive, channel=chan["id"]) == "not_archived"
    assert error_of(web(cluster, carol).conversations_archive,
                    channel=chan["id"]) == "not_in_channel"
    assert error_of(client.conversations_archive, channel=general) == "cant_archive_general"
    assert error_of(client.conversations_archive,
                    channel=other["channels"][0]["id"]) == "channel_not_found"
    assert raw(cluster, "conversations.archive", alice)["error"] == "channel_not_found"
    assert client.conversations_info(channel=chan["id"])["channel"]["is_archived"] is False
    assert web(cluster, bob).conversations_archive(channel=chan["id"]).data == {"ok": True}
    info = client.conversations_info(channel=chan["id"])["channel"]
    assert info["is_archived"] is True and info["updated"] >= info["created"] * 1000
    assert error_of(client.conversations_archive, channel=chan["id"]) == "already_archived"
    assert error_of(client.chat_postMessage, channel=chan["id"], text="x") == "is_archived"
    assert error_of(web(cluster, carol).conversations_join, channel=chan["id"]) == "is_archived"
    assert error_of(client.conversations_setTopic, channel=chan["id"],
                    topic="t") == "is_archived"
    # still listed, unless archived ones are excluded
    assert chan["id"] in {c["id"] for c in listed(cluster, carol)}
    assert chan["id"] not in {c["id"] for c in listed(cluster, carol, exclude_archived=True)}
    assert client.conversations_unarchive(channel=chan["id"]).data == {"ok": True}
    assert client.conversations_info(channel=chan["id"])["channel"]["is_archived"] is False
    assert client.chat_postMessage(channel=chan["id"], text="back")["ok"]


# --- rename ---------------------------------------------------------------------------------


def test_rename_rules(cluster, ws, other):
    alice, bob = ws["users"][:2]
    chan = create(cluster, alice)
    web(cluster, bob).conversations_join(channel=chan["id"])
    taken = create(cluster, alice)
    client = web(cluster, alice)
    for name, expect in (("", "invalid_name_required"), ("x" * 81, "invalid_name_maxlength"),
                         ("Has Caps", "invalid_name_specials"),
                         ("---", "invalid_name_punctuation"), (taken["name"], "name_taken")):
        assert error_of(client.conversations_rename, channel=chan["id"], name=name) == expect
    assert error_of(web(cluster, bob).conversations_rename, channel=chan["id"],
                    name=uname()) == "not_authorized"
    assert error_of(web(cluster, ws["users"][2]).conversations_rename, channel=chan["id"],
                    name=uname()) == "not_in_channel"
    assert error_of(client.conversations_rename, channel=other["channels"][0]["id"],
                    name=uname()) == "channel_not_found"
    assert client.conversations_info(channel=chan["id"])["channel"]["name"] == chan["name"]
    new = uname("renamed")
    reply = client.conversations_rename(channel=chan["id"], name=new)
    assert reply["channel"]["name"] == new and reply["channel"]["name_normalized"] == new
    assert reply["channel"]["previous_names"] == [chan["name"]]
    # the old name is free again, the new one taken; posting by name finds the channel
    again = create(cluster, alice, name=chan["name"])
    assert again["id"] != chan["id"]
    assert error_of(client.conversations_create, name=new) == "name_taken"
    posted = client.chat_postMessage(channel=f"#{new}", text="by name")
    assert posted["channel"] == chan["id"]
    same = client.conversations_rename(channel=chan["id"], name=new)
    assert same["channel"]["name"] == new


# --- setTopic / setPurpose ------------------------------------------------------------------


def test_topic_and_purpose(cluster, ws, other):
    alice, bob, carol = ws["users"][:3]
    chan = create(cluster, alice)
    web(cluster, bob).conversations_join(channel=chan["id"])
    reply = web(cluster, bob).conversations_setTopic(channel=chan["id"], topic="t" * 250)
    topic = reply["channel"]["topic"]
    assert (topic["value"], topic["creator"]) == ("t" * 250, bob["id"]) and topic["last_set"] > 0
    assert reply["topic"] == "t" * 250
    reply = web(cluster, alice).conversations_setPurpose(channel=chan["id"], purpose="why")
    assert reply["channel"]["purpose"]["value"] == "why"
    assert reply["channel"]["purpose"]["creator"] == alice["id"]
    info = web(cluster, carol).conversations_info(channel=chan["id"])["channel"]
    assert info["topic"]["value"] == "t" * 250 and info["purpose"]["value"] == "why"
    client = web(cluster, alice)
    assert error_of(client.conversations_setTopic, channel=chan["id"],
                    topic="x" * 251) == "too_long"
    assert error_of(client.conversations_setPurpose, channel=chan["id"],
                    purpose="x" * 251) == "too_long"
    assert error_of(web(cluster, carol).conversations_setTopic, channel=chan["id"],
                    topic="no") == "not_in_channel"
    assert error_of(client.conversations_setTopic, channel=other["channels"][0]["id"],
                    topic="no") == "channel_not_found"
    assert raw(cluster, "conversations.setTopic", alice, channel=chan["id"])["error"] == \
        "invalid_arguments"
    assert raw(cluster, "conversations.setTopic", alice, channel=chan["id"],
               topic=["x"])["error"] == "invalid_arguments"
    info = web(cluster, carol).conversations_info(channel=chan["id"])["channel"]
    assert info["topic"]["value"] == "t" * 250
    cleared = client.conversations_setTopic(channel=chan["id"], topic="")
    assert cleared["channel"]["topic"]["value"] == ""


# --- mark -----------------------------------------------------------------------------------


def test_mark_bad_inputs(cluster, ws, other):
    alice, carol = ws["users"][0], ws["users"][2]
    chan = create(cluster, alice)
    priv = create(cluster, alice, private=True)
    client = web(cluster, carol)
    ts = web(cluster, alice).chat_postMessage(channel=chan["id"], text="m")["ts"]
    assert error_of(client.conversations_mark, channel=chan["id"], ts=ts) == "not_in_channel"
    assert error_of(client.conversations_mark, channel=priv["id"], ts=ts) == "channel_not_found"
    assert error_of(client.conversations_mark, channel=other["channels"][0]["id"],
                    ts=ts) == "channel_not_found"
    assert raw(cluster, "conversations.mark", alice, channel=chan["id"])["error"] == \
        "invalid_timestamp"
    assert raw(cluster, "conversations.mark", alice, channel=chan["id"],
               ts="yesterday")["error"] == "invalid_timestamp"
    assert raw(cluster, "conversations.mark", alice, ts=ts)["error"] == "channel_not_found"
    info = web(cluster, alice).conversations_info(channel=chan["id"])["channel"]
    assert info["last_read"] == NEVER_READ


# --- RTM: who receives what -----------------------------------------------------------------


async def test_channel_created_reaches_the_workspace_only(cluster):
    team, elsewhere = cluster.seed(2), cluster.seed(1)
    alice, bob = team["users"]
    async with rtm_session(cluster, bob["token"]) as bob_rtm, rtm_session(
        cluster, elsewhere["users"][0]["token"]
    ) as other_rtm:
        secret = await in_thread(web(cluster, alice).conversations_create, name=uname("s"),
                                 is_private=True)
        name = uname("pub")
        public = await in_thread(web(cluster, alice).conversations_create, name=name)
        event = await bob_rtm.next({"type": "channel_created"})
        # the workspace stream is ordered: a private channel announced there would come first
        assert event["channel"]["id"] == public["channel"]["id"]
        assert event["channel"]["name"] == name and event["channel"]["creator"] == alice["id"]
        assert event["stream"] == team["team"]["id"]
        assert not [e for e in bob_rtm.seen if secret["channel"]["id"] in str(e)]
        theirs = await in_thread(web(cluster, elsewhere["users"][0]).conversations_create,
                                 name=uname())
        mine = await other_rtm.next({"type": "channel_created"})
        assert mine["channel"]["id"] == theirs["channel"]["id"]
        assert not [e for e in other_rtm.seen if public["channel"]["id"] in str(e)]


async def test_kicked_member_stops_receiving(cluster):
    team = cluster.seed(3)
    alice, bob, carol = team["users"]
    priv = await in_thread(web(cluster, alice).conversations_create, name=uname(),
                           is_private=True)
    channel = priv["channel"]["id"]
    await in_thread(web(cluster, alice).conversations_invite, channel=channel,
                    users=f"{bob['id']},{carol['id']}")
    async with rtm_session(cluster, bob["token"]) as bob_rtm, rtm_session(
        cluster, carol["token"], gateway=gateway_of(bob_rtm)
    ) as carol_rtm:
        first = await in_thread(web(cluster, alice).chat_postMessage, channel=channel, text="1")
        await bob_rtm.next({"type": "message", "ts": first["ts"]})
        await in_thread(web(cluster, alice).conversations_kick, channel=channel, user=bob["id"])
        left = await bob_rtm.next({"type": "group_left"})
        assert (left["channel"], left["actor_id"]) == (channel, alice["id"])
        gone = await carol_rtm.next({"type": "member_left_channel"})
        assert (gone["user"], gone["channel"], gone["channel_type"]) == (bob["id"], channel, "G")
        after = await in_thread(web(cluster, alice).chat_postMessage, channel=channel,
                                text="2")
        await carol_rtm.next({"type": "message", "ts": after["ts"]})
        await nothing_more(bob_rtm, 7)
        assert not [e for e in bob_rtm.seen if e.get("ts") == after["ts"]]
    assert await in_thread(_error_in_thread, web(cluster, bob).conversations_history,
                           channel=channel) == "channel_not_found"


def _error_in_thread(fn: Callable[..., Any], /, **kwargs: Any) -> str:
    try:
        fn(**kwargs)
    except SlackApiError as exc:
        return str(exc.response["error"])
    return "ok"


async def test_invite_subscribes_the_invitee(cluster):
    team = cluster.seed(3)
    alice, bob, _ = team["users"]
    priv = await in_thread(web(cluster, alice).conversations_create, name=uname(),
                           is_private=True)
    channel = priv["channel"]["id"]
    async with rtm_session(cluster, alice["token"]) as alice_rtm, rtm_session(
        cluster, bob["token"]
    ) as bob_rtm:
        await in_thread(web(cluster, alice).conversations_invite, channel=channel,
                        users=bob["id"])
        joined = await bob_rtm.next({"type": "group_joined"})
        assert joined["channel"]["id"] == channel and joined["channel"]["is_private"] is True
        member = await alice_rtm.next({"type": "member_joined_channel", "user": bob["id"]})
        assert (member["channel"], member["inviter"]) == (channel, alice["id"])
        post = await in_thread(web(cluster, alice).chat_postMessage, channel=channel, text="hi")
        await bob_rtm.next({"type": "message", "ts": post["ts"]})


async def test_leave_unsubscribes_the_leaver(cluster):
    team = cluster.seed(2)
    alice, bob = team["users"]
    chan = await in_thread(web(cluster, alice).conversations_create, name=uname())
    channel = chan["channel"]["id"]
    await in_thread(web(cluster, bob).conversations_join, channel=channel)
    async with rtm_session(cluster, bob["token"]) as bob_rtm, rtm_session(
        cluster, alice["token"], gateway=gateway_of(bob_rtm)
    ) as alice_rtm:
        await in_thread(web(cluster, bob).conversations_leave, channel=channel)
        left = await bob_rtm.next({"type": "channel_left"})
        assert (left["channel"], left["actor_id"]) == (channel, bob["id"])
        gone = await alice_rtm.next({"type": "member_left_channel"})
        assert (gone["user"], gone["channel_type"]) == (bob["id"], "C")
        post = await in_thread(web(cluster, alice).chat_postMessage, channel=channel, text="x")
        await alice_rtm.next({"type": "message", "ts": post["ts"]})
        await nothing_more(bob_rtm, 8)
        assert not [e for e in bob_rtm.seen if e.get("ts") == post["ts"]]


async def test_group_lifecycle_reaches_members_only(cluster):
    team = cluster.seed(3)
    alice, bob, dave = team["users"]
    priv = await in_thread(web(cluster, alice).conversations_create, name=uname(),
                           is_private=True)
    channel = priv["channel"]["id"]
    await in_thread(web(cluster, alice).conversations_invite, channel=channel, users=bob["id"])
    async with rtm_session(cluster, bob["token"]) as bob_rtm, rtm_session(
        cluster, dave["token"]
    ) as dave_rtm:
        new = uname("hidden")
        await in_thread(web(cluster, alice).conversations_rename, channel=channel, name=new)
        renamed = await bob_rtm.next({"type": "group_rename"})
        assert renamed["channel"]["id"] == channel and renamed["channel"]["name"] == new
        assert renamed["stream"] == channel
        await in_thread(web(cluster, alice).conversations_archive, channel=channel)
        archived = await bob_rtm.next({"type": "group_archive"})
        assert (archived["channel"], archived["user"]) == (channel, alice["id"])
        await in_thread(web(cluster, alice).conversations_unarchive, channel=channel)
        back = await bob_rtm.next({"type": "group_unarchive"})
        assert back["channel"] == channel
        # dave's workspace stream is ordered: had any of it gone there, it came first
        public = await in_thread(web(cluster, alice).conversations_create, name=uname())
        created = await dave_rtm.next({"type": "channel_created"})
        assert created["channel"]["id"] == public["channel"]["id"]
        assert not [e for e in dave_rtm.seen if channel in str(e) or new in str(e)]


async def test_public_lifecycle_reaches_the_workspace(cluster):
    team, elsewhere = cluster.seed(2), cluster.seed(1)
    alice, dave = team["users"]
    chan = await in_thread(web(cluster, alice).conversations_create, name=uname())
    channel = chan["channel"]["id"]
    async with rtm_session(cluster, dave["token"]) as dave_rtm, rtm_session(
        cluster, elsewhere["users"][0]["token"]
    ) as other_rtm:
        new = uname("open")
        await in_thread(web(cluster, alice).conversations_rename, channel=channel, name=new)
        renamed = await dave_rtm.next({"type": "channel_rename"})
        assert renamed["channel"] == {"id": channel, "name": new, "name_normalized": new,
                                      "created": chan["channel"]["created"],
                                      "is_channel": True, "is_mpim": False}
        await in_thread(web(cluster, alice).conversations_archive, channel=channel)
        archived = await dave_rtm.next({"type": "channel_archive"})
        assert (archived["channel"], archived["user"]) == (channel, alice["id"])
        await in_thread(web(cluster, alice).conversations_unarchive, channel=channel)
        back = await dave_rtm.next({"type": "channel_unarchive"})
        assert (back["channel"], back["user"]) == (channel, alice["id"])
        await nothing_more(other_rtm, 9)
        assert not [e for e in other_rtm.seen if channel in str(e)]


async def test_mark_syncs_the_readers_other_sockets(cluster):
    team = cluster.seed(2)
    alice, bob = team["users"]
    general = team["channels"][0]["id"]
    priv = await in_thread(web(cluster, alice).conversations_create, name=uname(),
                           is_private=True)
    first = await in_thread(web(cluster, bob).chat_postMessage, channel=general, text="1")
    await in_thread(web(cluster, bob).chat_postMessage, channel=general, text="2")
    async with rtm_session(cluster, alice["token"]) as phone, rtm_session(
        cluster, alice["token"]
    ) as laptop, rtm_session(cluster, bob["token"]) as bob_rtm:
        await in_thread(web(cluster, alice).conversations_mark, channel=general,
                        ts=first["ts"])
        for socket in (phone, laptop):
            marked = await socket.next({"type": "channel_marked"})
            assert (marked["channel"], marked["ts"]) == (general, first["ts"])
            assert (marked["unread_count"], marked["unread_count_display"]) == (1, 1)
            assert marked["stream"] == alice["id"]
        await in_thread(web(cluster, alice).conversations_mark, channel=priv["channel"]["id"],
                        ts=first["ts"])
        group = await laptop.next({"type": "group_marked"})
        assert group["channel"] == priv["channel"]["id"]
        await in_thread(web(cluster, bob).conversations_mark, channel=general, ts=first["ts"])
        await bob_rtm.next({"type": "channel_marked"})
        assert [e["type"] for e in bob_rtm.seen if e["type"].endswith("_marked")] == [
            "channel_marked"]


async def test_concurrent_renames_leave_only_the_last_name_taken(cluster):
    team = cluster.seed(1)
    alice = team["users"][0]
    chan = await in_thread(web(cluster, alice).conversations_create, name=uname())
    names = [uname("race") for _ in range(6)]
    async with httpx.AsyncClient(timeout=30) as http:
        replies: list[dict[str, Any]] = []

        async def rename(name: str) -> None:
            resp = await http.post(cluster.api + "conversations.rename",
                                   headers={"Authorization": f"Bearer {alice['token']}"},
                                   json={"channel": chan["channel"]["id"], "name": name})
            replies.append(resp.json())

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(rename, name)
    assert all(r["ok"] for r in replies), replies
    final = (await in_thread(web(cluster, alice).conversations_info,
                             channel=chan["channel"]["id"]))["channel"]["name"]
    # exactly the final name stays reserved: every other name (and the first) is free again
    for name in [chan["channel"]["name"], *names]:
        reply = await in_thread(_error_in_thread, web(cluster, alice).conversations_create,
                                name=name)
        assert reply == ("name_taken" if name == final else "ok"), name
