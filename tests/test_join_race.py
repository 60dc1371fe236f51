"""A message posted right after a join reaches the joiner's open socket: the gateway
subscribes the new channel from the join's position (carried by channel_joined), not from
whenever its subscription happens to land."""

from __future__ import annotations

import httpx
import trio

from tests.conftest import rtm_session


async def test_post_right_after_join_is_not_missed(cluster):
    ws = cluster.seed(2)
    owner, joiner = ws["users"][0], ws["users"][1]
    auth = {"Authorization": f"Bearer {owner['token']}"}
    async with rtm_session(cluster, joiner["token"]) as rtm, httpx.AsyncClient(
        timeout=10
    ) as http:
        expected = []
        for i in range(8):
            channel = (await http.post(cluster.api + "conversations.create", headers=auth,
                                       json={"name": f"race-{i}"})).json()["channel"]["id"]
            joined = (await http.post(cluster.api + "conversations.join", json={
                "channel": channel}, headers={"Authorization": f"Bearer {joiner['token']}"}
            )).json()
            assert joined["ok"], joined
            # no waiting for channel_joined: the post races the gateway's subscription
            posted = (await http.post(cluster.api + "chat.postMessage", headers=auth, json={
                "channel": channel, "text": f"right after {i}"})).json()
            assert posted["ok"], posted
            expected.append((channel, posted["ts"]))
        with trio.fail_after(15):
            got = set()
            while not set(expected) <= got:
                event = await rtm.next({"type": "message"})
                got.add((event["channel"], event["ts"]))
    joined_events = [e for e in rtm.seen if e.get("type") == "channel_joined"]
    assert len(joined_events) == 8
    assert all("_at" not in e for e in joined_events)  # internal, never sent to clients
    # the joiner also saw its own member_joined_channel in each channel, exactly once
    mine = [e for e in rtm.seen if e.get("type") == "member_joined_channel"
            and e.get("user") == joiner["id"]]
    assert sorted(e["channel"] for e in mine) == sorted(c for c, _ in expected)
