"""The whole path through real processes: slack_sdk posts over HTTP, members receive the
RTM events over WebSocket (raw and through slack_sdk's RTMClient), history returns them."""

from __future__ import annotations

import queue

import httpx
import trio
from slack_sdk import WebClient
from slack_sdk.rtm_v2 import RTMClient

from tests.conftest import gateway_of, rtm_session


def web(cluster, token: str) -> WebClient:
    return WebClient(token=token, base_url=cluster.api)


async def test_post_reaches_member_socket_and_history(cluster):
    ws = cluster.seed(3)
    alice, bob = ws["users"][0], ws["users"][1]
    general = ws["channels"][0]["id"]
    async with rtm_session(cluster, bob["token"]) as rtm:
        reply = await trio.to_thread.run_sync(
            lambda: web(cluster, alice["token"]).chat_postMessage(channel=general,
                                                                  text="hello *world* ☃"))
        assert reply["ok"] and reply["channel"] == general
        event = await rtm.next({"type": "message", "ts": reply["ts"]})
    position = {"stream": event.pop("stream"), "seq": event.pop("seq")}  # docs/rtm.md
    assert position["stream"] == general and position["seq"] > rtm.hello_positions[general]
    assert event == {"type": "message", "user": alice["id"], "text": "hello *world* ☃",
                     "ts": reply["ts"], "team": ws["team"]["id"], "channel": general,
                     "event_ts": reply["ts"]}
    assert reply["message"]["text"] == "hello *world* ☃"
    history = await trio.to_thread.run_sync(
        lambda: web(cluster, bob["token"]).conversations_history(channel=general, limit=5))
    assert history["messages"][0]["ts"] == reply["ts"]
    assert history["messages"][0]["user"] == alice["id"]


async def test_slack_sdk_rtm_client_receives_message(cluster):
    ws = cluster.seed(2)
    alice, bot = ws["users"][0], ws["bot"]
    general = ws["channels"][0]["id"]
    received: queue.Queue = queue.Queue()
    rtm = RTMClient(token=bot["token"], base_url=cluster.api)

    @rtm.on("hello")
    def on_hello(client, event):
        received.put(event)

    @rtm.on("message")
    def on_message(client, event):
        received.put(event)

    def wait_for(kind: str) -> dict:
        while True:
            event = received.get(timeout=10)
            if event.get("type") == kind:
                return event

    await trio.to_thread.run_sync(rtm.connect)
    try:
        await trio.to_thread.run_sync(wait_for, "hello")
        assert rtm.bot_id == bot["bot_id"]  # from auth.test, which RTMClient requires
        reply = await trio.to_thread.run_sync(
            lambda: web(cluster, alice["token"]).chat_postMessage(channel=general, text="to bot"))
        event = await trio.to_thread.run_sync(wait_for, "message")
        assert (event["ts"], event["text"], event["user"]) == (reply["ts"], "to bot", alice["id"])
    finally:
        await trio.to_thread.run_sync(rtm.close)


async def test_concurrent_posts_unique_ts_delivered_in_order(cluster):
    ws = cluster.seed(5)
    general = ws["channels"][0]["id"]
    listener = ws["users"][4]
    posts = 60
    async with rtm_session(cluster, listener["token"]) as rtm, httpx.AsyncClient(
        timeout=20
    ) as http:
        replies = []

        async def post(i: int) -> None:
            author = ws["users"][i % 4]
            resp = await http.post(cluster.api + "chat.postMessage",
                                   headers={"Authorization": f"Bearer {author['token']}"},
                                   json={"channel": general, "text": f"m{i}"})
            replies.append(resp.json())

        async with trio.open_nursery() as nursery:
            for i in range(posts):
                nursery.start_soon(post, i)
        assert all(r["ok"] for r in replies), replies
        stamps = [r["ts"] for r in replies]
        assert len(set(stamps)) == posts
        got = []
        while len(got) < posts:
            event = await rtm.next({"type": "message"})
            got.append(event["ts"])
    # one stream, delivered in seq order: ts (assigned under the same lock) never decreases
    assert got == sorted(got, key=lambda ts: tuple(map(int, ts.split("."))))
    assert sorted(got) == sorted(stamps)


async def test_history_cursor_pagination(cluster):
    ws = cluster.seed(1)
    token, general = ws["users"][0]["token"], ws["channels"][0]["id"]
    client = web(cluster, token)
    posted = []
    for i in range(23):
        posted.append((await trio.to_thread.run_sync(
            lambda i=i: client.chat_postMessage(channel=general, text=f"p{i}")))["ts"])
    pages, cursor = [], None
    while True:
        page = await trio.to_thread.run_sync(
            lambda c=cursor: client.conversations_history(channel=general, limit=10, cursor=c))
        pages.append([m["ts"] for m in page["messages"]])
        cursor = page["response_metadata"]["next_cursor"]
        assert page["has_more"] == bool(cursor)
        if not cursor:
            break
    assert [len(p) for p in pages] == [10, 10, 3]
    assert [ts for p in pages for ts in p] == list(reversed(posted))
    window = await trio.to_thread.run_sync(lambda: client.conversations_history(
        channel=general, oldest=posted[5], latest=posted[8], inclusive=True))
    assert [m["ts"] for m in window["messages"]] == list(reversed(posted[5:9]))
    exclusive = await trio.to_thread.run_sync(lambda: client.conversations_history(
        channel=general, oldest=posted[5], latest=posted[8]))
    assert [m["ts"] for m in exclusive["messages"]] == list(reversed(posted[6:8]))


async def test_join_subscribes_new_channel_live(cluster):
    ws = cluster.seed(3)
    alice, bob, carol = ws["users"]
    created = await trio.to_thread.run_sync(
        lambda: web(cluster, alice["token"]).conversations_create(name="launch"))
    channel = created["channel"]["id"]
    assert created["channel"]["is_member"] is True
    async with rtm_session(cluster, bob["token"]) as bob_rtm, rtm_session(
        cluster, alice["token"]
    ) as alice_rtm, rtm_session(cluster, carol["token"], gateway=gateway_of(bob_rtm)) as carol_rtm:
        joined = await trio.to_thread.run_sync(
            lambda: web(cluster, bob["token"]).conversations_join(channel=channel))
        assert joined["channel"]["id"] == channel
        event = await bob_rtm.next({"type": "channel_joined"})
        assert event["channel"]["id"] == channel
        member = await alice_rtm.next({"type": "member_joined_channel"})
        assert (member["user"], member["channel"]) == (bob["id"], channel)
        reply = await trio.to_thread.run_sync(
            lambda: web(cluster, alice["token"]).chat_postMessage(channel=channel, text="in"))
        await bob_rtm.next({"type": "message", "ts": reply["ts"]})
        # carol shares bob's gateway but is not a member: after a ping round trip that the
        # gateway queued behind anything it could have sent her, she has seen no message
        await carol_rtm.send({"type": "ping", "id": 99})
        await carol_rtm.next({"type": "pong", "reply_to": 99})
        assert not [e for e in carol_rtm.seen if e.get("channel") == channel]
    again = await trio.to_thread.run_sync(
        lambda: web(cluster, bob["token"]).conversations_join(channel=channel))
    assert again["warning"] == "already_in_channel"
    info = await trio.to_thread.run_sync(
        lambda: web(cluster, carol["token"]).conversations_info(channel=channel))
    assert info["channel"]["name"] == "launch" and info["channel"]["is_member"] is False


async def test_private_channel_members_only(cluster):
    ws = cluster.seed(2)
    alice, bob = ws["users"]
    created = await trio.to_thread.run_sync(
        lambda: web(cluster, alice["token"]).conversations_create(name="secret", is_private=True))
    channel = created["channel"]
    assert channel["id"].startswith("G") and channel["is_private"] is True
    async with httpx.AsyncClient(timeout=10) as http:
        for method in ("conversations.info", "conversations.history", "conversations.join"):
            body = (await http.post(cluster.api + method, json={"channel": channel["id"]},
                                    headers={"Authorization": f"Bearer {bob['token']}"})).json()
            assert body == {"ok": False, "error": "channel_not_found"}, method


async def test_presence_follows_connections(cluster):
    ws = cluster.seed(2)
    alice, bob = ws["users"]
    client = web(cluster, alice["token"])

    async def presence() -> str:
        reply = await trio.to_thread.run_sync(lambda: client.users_getPresence(user=bob["id"]))
        return reply["presence"]

    async def until(value: str) -> None:
        with trio.fail_after(10):
            while await presence() != value:
                await trio.sleep(0.05)

    assert await presence() == "away"
    async with rtm_session(cluster, bob["token"]):
        await until("active")
    await until("away")


async def test_typing_reaches_other_members(cluster):
    ws = cluster.seed(2)
    alice, bob = ws["users"]
    general = ws["channels"][0]["id"]
    async with rtm_session(cluster, alice["token"]) as alice_rtm, rtm_session(
        cluster, bob["token"]
    ) as bob_rtm:
        await bob_rtm.send({"type": "typing", "id": 1, "channel": general})
        event = await alice_rtm.next({"type": "user_typing"})
        assert event == {"type": "user_typing", "channel": general, "user": bob["id"]}


async def test_auth_test_shapes(cluster):
    ws = cluster.seed(1)
    user = await trio.to_thread.run_sync(lambda: web(cluster, ws["users"][0]["token"]).auth_test())
    assert user["user_id"] == ws["users"][0]["id"] and "bot_id" not in user.data
    bot = await trio.to_thread.run_sync(lambda: web(cluster, ws["bot"]["token"]).auth_test())
    assert (bot["user_id"], bot["bot_id"], bot["team_id"]) == (
        ws["bot"]["id"], ws["bot"]["bot_id"], ws["team"]["id"])
    posted = await trio.to_thread.run_sync(lambda: web(cluster, ws["bot"]["token"])
                                           .chat_postMessage(channel=ws["channels"][0]["id"],
                                                             text="beep"))
    assert posted["message"]["bot_id"] == ws["bot"]["bot_id"]
