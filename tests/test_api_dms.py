"""DMs and group DMs through slack_sdk: conversations.open (the same set of people always
gives the same conversation, up to 9 people), close, their RTM events (im_created,
mpim_joined, im_open, im_close, im_marked), and their privacy: nobody outside sees them."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from tests.conftest import gateway_of, rtm_session
from tests.test_api_conversations import (
    NEVER_READ,
    create,
    error_of,
    in_thread,
    listed,
    nothing_more,
    raw,
    web,
)


def open_dm(cluster: Any, user: dict[str, Any], *others: dict[str, Any], **kwargs: Any
            ) -> dict[str, Any]:
    reply = web(cluster, user).conversations_open(users=",".join(o["id"] for o in others),
                                                  **kwargs)
    return reply.data


def test_open_im_is_idempotent_and_shared(cluster):
    team = cluster.seed(3)
    alice, bob, carol = team["users"]
    first = open_dm(cluster, alice, bob)
    assert first == {"ok": True, "channel": {"id": first["channel"]["id"]}}
    dm = first["channel"]["id"]
    assert dm.startswith("D")
    again = open_dm(cluster, alice, bob)
    assert again == {"ok": True, "no_op": True, "already_open": True, "channel": {"id": dm}}
    assert open_dm(cluster, bob, alice)["channel"]["id"] == dm
    # naming yourself too changes nothing: it is the same pair
    assert web(cluster, alice).conversations_open(
        users=f"{alice['id']},{bob['id']}")["channel"]["id"] == dm
    full = open_dm(cluster, alice, bob, return_im=True)["channel"]
    assert (full["id"], full["is_im"], full["user"], full["is_open"]) == (dm, True, bob["id"],
                                                                         True)
    assert (full["last_read"], full["unread_count"], full["unread_count_display"]) == (
        NEVER_READ, 0, 0)
    assert web(cluster, bob).conversations_info(channel=dm)["channel"]["user"] == alice["id"]
    assert web(cluster, alice).conversations_members(channel=dm)["members"] == sorted(
        [alice["id"], bob["id"]])
    # the DM with carol is another one
    assert open_dm(cluster, alice, carol)["channel"]["id"] not in (dm,)


def test_open_group_dm_any_order_up_to_nine(cluster):
    team = cluster.seed(10)
    users = team["users"]
    alice, bob, carol = users[:3]
    mpim = open_dm(cluster, alice, bob, carol)["channel"]["id"]
    assert mpim.startswith("G")
    assert open_dm(cluster, alice, carol, bob)["channel"]["id"] == mpim
    assert open_dm(cluster, carol, alice, bob)["channel"]["id"] == mpim
    info = web(cluster, bob).conversations_info(channel=mpim,
                                                include_num_members=True)["channel"]
    assert (info["is_mpim"], info["is_private"], info["is_group"], info["is_channel"]) == (
        True, True, True, False)
    assert info["num_members"] == 3 and info["name"] == "mpdm-user1--user2--user3-1"
    nine = open_dm(cluster, alice, *users[1:9])["channel"]["id"]
    assert len(web(cluster, alice).conversations_members(channel=nine)["members"]) == 9
    assert error_of(web(cluster, alice).conversations_open,
                    users=",".join(u["id"] for u in users[1:10])) == "too_many_users"
    # the caller named among the others does not count against the limit
    assert web(cluster, alice).conversations_open(
        users=",".join(u["id"] for u in users[:9]))["channel"]["id"] == nine


def test_open_bad_inputs_change_nothing(cluster):
    team, elsewhere = cluster.seed(3), cluster.seed(1)
    alice, bob, carol = team["users"]
    client = web(cluster, alice)
    assert raw(cluster, "conversations.open", alice)["error"] == "users_list_not_supplied"
    assert raw(cluster, "conversations.open", alice, users="")["error"] == "not_enough_users"
    assert raw(cluster, "conversations.open", alice, users=" , ")["error"] == "not_enough_users"
    assert raw(cluster, "conversations.open", alice, users=[7])["error"] == "invalid_arguments"
    assert error_of(client.conversations_open, users="nobody") == "user_not_found"
    assert error_of(client.conversations_open,
                    users=elsewhere["users"][0]["id"]) == "user_not_found"
    assert error_of(client.conversations_open,
                    users=f"{bob['id']},{elsewhere['users'][0]['id']}") == "user_not_found"
    general = team["channels"][0]["id"]
    assert error_of(client.conversations_open,
                    channel=general) == "method_not_supported_for_channel_type"
    theirs = open_dm(cluster, bob, carol)["channel"]["id"]
    assert error_of(client.conversations_open, channel=theirs) == "channel_not_found"
    assert error_of(client.conversations_open,
                    channel=elsewhere["channels"][0]["id"]) == "channel_not_found"
    # prevent_creation: nothing there yet, nothing made
    assert open_dm(cluster, alice, bob, prevent_creation=True) == {
        "ok": True, "no_op": True, "channel": {}}
    assert listed(cluster, alice, types="im,mpim") == []
    made = open_dm(cluster, alice, bob)["channel"]["id"]
    assert open_dm(cluster, alice, bob, prevent_creation=True)["channel"]["id"] == made


def test_dm_with_yourself(cluster):
    alice = cluster.seed(1)["users"][0]
    dm = open_dm(cluster, alice, alice)["channel"]["id"]
    assert dm.startswith("D")
    info = web(cluster, alice).conversations_info(channel=dm)["channel"]
    assert info["user"] == alice["id"] and info["is_im"] is True
    assert web(cluster, alice).conversations_members(channel=dm)["members"] == [alice["id"]]


def test_dms_are_invisible_to_others(cluster):
    team = cluster.seed(3)
    alice, bob, carol = team["users"]
    dm = open_dm(cluster, alice, bob)["channel"]["id"]
    group = open_dm(cluster, alice, bob, team["bot"])["channel"]["id"]
    client = web(cluster, carol)
    for channel in (dm, group):
        for method in (client.conversations_info, client.conversations_history,
                       client.conversations_members, client.conversations_join,
                       client.conversations_close, client.conversations_leave):
            assert error_of(method, channel=channel) == "channel_not_found", method
        assert error_of(client.conversations_mark, channel=channel,
                        ts="1.000000") == "channel_not_found"
        assert error_of(client.chat_postMessage, channel=channel, text="x") == \
            "channel_not_found"
    assert listed(cluster, carol, types="public_channel,private_channel,mpim,im") == [
        c for c in listed(cluster, carol, types="public_channel,private_channel,mpim,im")
        if c["id"] not in (dm, group)]
    assert {c["id"] for c in listed(cluster, carol, types="im,mpim")} == set()
    # members may not use channel methods on them either
    member = web(cluster, alice)
    for channel in (dm, group):
        for method, kwargs in ((member.conversations_leave, {}),
                               (member.conversations_archive, {}),
                               (member.conversations_rename, {"name": "x"}),
                               (member.conversations_invite, {"users": carol["id"]}),
                               (member.conversations_kick, {"user": bob["id"]}),
                               (member.conversations_join, {})):
            assert error_of(method, channel=channel, **kwargs) == \
                "method_not_supported_for_channel_type", method
    assert error_of(member.conversations_setTopic, channel=dm,
                    topic="t") == "method_not_supported_for_channel_type"
    assert member.conversations_setTopic(channel=group, topic="plans")["ok"]


def test_close_and_reopen(cluster):
    team = cluster.seed(2)
    alice, bob = team["users"]
    general = team["channels"][0]["id"]
    dm = open_dm(cluster, alice, bob)["channel"]["id"]
    client = web(cluster, alice)
    assert client.conversations_close(channel=dm).data == {"ok": True}
    assert client.conversations_close(channel=dm).data == {
        "ok": True, "no_op": True, "already_closed": True}
    assert client.conversations_info(channel=dm)["channel"]["is_open"] is False
    # closing is the caller's own: bob still has it open
    assert web(cluster, bob).conversations_info(channel=dm)["channel"]["is_open"] is True
    assert error_of(client.conversations_close,
                    channel=general) == "method_not_supported_for_channel_type"
    assert error_of(client.conversations_close, channel="D000NOPE") == "channel_not_found"
    assert raw(cluster, "conversations.close", alice)["error"] == "channel_not_found"
    reopened = client.conversations_open(channel=dm)
    assert reopened.data == {"ok": True, "channel": {"id": dm}}
    assert client.conversations_info(channel=dm)["channel"]["is_open"] is True


def test_post_to_a_user_id_opens_the_dm(cluster):
    team, elsewhere = cluster.seed(2), cluster.seed(1)
    alice, bob = team["users"]
    posted = web(cluster, alice).chat_postMessage(channel=bob["id"], text="psst")
    dm = open_dm(cluster, bob, alice)["channel"]["id"]
    assert posted["channel"] == dm
    history = web(cluster, bob).conversations_history(channel=dm)["messages"]
    assert [m["text"] for m in history] == ["psst"]
    info = web(cluster, bob).conversations_info(channel=dm)["channel"]
    assert (info["unread_count"], info["unread_count_display"]) == (1, 1)
    assert error_of(web(cluster, alice).chat_postMessage, channel=elsewhere["users"][0]["id"],
                    text="no") == "channel_not_found"
    assert web(cluster, alice).chat_postMessage(channel="#general", text="by name")[
        "channel"] == team["channels"][0]["id"]
    assert web(cluster, alice).chat_postMessage(channel="general", text="by name")[
        "channel"] == team["channels"][0]["id"]
    private = create(cluster, alice, private=True)
    assert error_of(web(cluster, bob).chat_postMessage, channel=private["name"],
                    text="no") == "channel_not_found"
    assert error_of(web(cluster, bob).chat_postMessage, channel="#no-such-channel",
                    text="no") == "channel_not_found"


async def test_concurrent_opens_agree_on_one_dm(cluster):
    team = cluster.seed(3)
    alice, bob, carol = team["users"]
    async with httpx.AsyncClient(timeout=30) as http:
        ids: list[str] = []

        async def open_(opener: dict[str, Any], users: str) -> None:
            resp = await http.post(cluster.api + "conversations.open",
                                   headers={"Authorization": f"Bearer {opener['token']}"},
                                   json={"users": users})
            body = resp.json()
            assert body["ok"], body
            ids.append(body["channel"]["id"])

        async with trio.open_nursery() as nursery:
            for i in range(8):
                opener, other = (alice, bob) if i % 2 else (bob, alice)
                nursery.start_soon(open_, opener, other["id"])
                nursery.start_soon(open_, opener, f"{other['id']},{carol['id']}")
    assert len({i for i in ids if i.startswith("D")}) == 1
    assert len({i for i in ids if i.startswith("G")}) == 1
    for user in (alice, bob):
        mine = await in_thread(listed, cluster=cluster, user=user, types="im,mpim")
        assert sorted(c["id"] for c in mine) == sorted(set(ids))


async def test_im_created_subscribes_both_and_only_them(cluster):
    team = cluster.seed(3)
    alice, bob, carol = team["users"]
    async with rtm_session(cluster, alice["token"]) as alice_rtm, rtm_session(
        cluster, bob["token"]
    ) as bob_rtm, rtm_session(cluster, carol["token"], gateway=gateway_of(bob_rtm)) as carol_rtm:
        opened = await in_thread(web(cluster, alice).conversations_open, users=bob["id"])
        dm = opened["channel"]["id"]
        for socket, peer in ((alice_rtm, bob), (bob_rtm, alice)):
            created = await socket.next({"type": "im_created"})
            assert created["channel"]["id"] == dm and created["channel"]["is_im"] is True
            assert created["user"] == peer["id"] and created["channel"]["user"] == peer["id"]
        post = await in_thread(web(cluster, alice).chat_postMessage, channel=dm, text="hi")
        await bob_rtm.next({"type": "message", "ts": post["ts"]})
        await nothing_more(carol_rtm, 5)
        assert not [e for e in carol_rtm.seen if dm in str(e)]
        await in_thread(web(cluster, bob).conversations_mark, channel=dm, ts=post["ts"])
        marked = await bob_rtm.next({"type": "im_marked"})
        assert (marked["channel"], marked["ts"], marked["unread_count"]) == (dm, post["ts"], 0)
        await in_thread(web(cluster, bob).conversations_close, channel=dm)
        closed = await bob_rtm.next({"type": "im_close"})
        assert (closed["channel"], closed["user"]) == (dm, bob["id"])
        # closed is not left: messages still arrive
        again = await in_thread(web(cluster, alice).chat_postMessage, channel=dm, text="2")
        await bob_rtm.next({"type": "message", "ts": again["ts"]})
        await in_thread(web(cluster, bob).conversations_open, channel=dm)
        reopened = await bob_rtm.next({"type": "im_open"})
        assert (reopened["channel"], reopened["user"]) == (dm, bob["id"])
    # a second open announces nothing new: no second im_created
    async with rtm_session(cluster, alice["token"]) as alice_rtm:
        await in_thread(web(cluster, alice).conversations_open, users=bob["id"])
        await in_thread(web(cluster, alice).conversations_mark, channel=dm, ts=post["ts"])
        await alice_rtm.next({"type": "im_marked"})
        assert not [e for e in alice_rtm.seen if e["type"] == "im_created"]


async def test_mpim_joined_subscribes_every_member(cluster):
    team = cluster.seed(4)
    alice, bob, carol, dave = team["users"]
    async with rtm_session(cluster, bob["token"]) as bob_rtm, rtm_session(
        cluster, carol["token"]
    ) as carol_rtm, rtm_session(cluster, dave["token"], gateway=gateway_of(bob_rtm)) as dave_rtm:
        opened = await in_thread(web(cluster, alice).conversations_open,
                                 users=f"{bob['id']},{carol['id']}")
        group = opened["channel"]["id"]
        for socket in (bob_rtm, carol_rtm):
            joined = await socket.next({"type": "mpim_joined"})
            assert joined["channel"]["id"] == group and joined["channel"]["is_mpim"] is True
        post = await in_thread(web(cluster, alice).chat_postMessage, channel=group, text="all")
        for socket in (bob_rtm, carol_rtm):
            await socket.next({"type": "message", "ts": post["ts"]})
        await nothing_more(dave_rtm, 6)
        assert not [e for e in dave_rtm.seen if group in str(e)]
        await in_thread(web(cluster, carol).conversations_close, channel=group)
        closed = await carol_rtm.next({"type": "mpim_close"})
        assert closed["channel"] == group
        await in_thread(web(cluster, carol).conversations_open,
                        users=f"{alice['id']},{bob['id']}")
        reopened = await carol_rtm.next({"type": "mpim_open"})
        assert reopened["channel"] == group
