"""Pushback: when fanout to a channel falls behind (a gateway link's queue at the channel
server holds more than ``fanout_behind_items``), posts to that channel are answered
``ratelimited`` with HTTP 429 and Retry-After before anything is written, while other
channels still take posts; once fanout catches up, every accepted post reaches its
subscribers exactly once, in order, and no refused one does.

The gateway is stopped with SIGSTOP: it reads nothing, the kernel's socket buffers fill,
and then the channel server's queue to it grows, which is exactly "behind"."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import Cluster, private_cluster, rtm_session

BEHIND_ITEMS = 16
BIG = "x" * 30_000  # large posts fill the socket buffers in a few hundred posts
IN_FLIGHT = 8
MAX_POSTS = 4000
MAX_TRIES = 200  # posts sent while looking for one more refusal of another kind


class Poster:
    """Posts as one user; records what was accepted (text, ts) and what was refused."""

    def __init__(self, c: Cluster, http: httpx.AsyncClient, user: dict[str, Any],
                 channel: str) -> None:
        self.c, self.http, self.user, self.channel = c, http, user, channel
        self.accepted: list[tuple[str, str]] = []
        self.refused: list[str] = []
        self.n = 0

    def text(self, kind: str) -> str:
        self.n += 1
        return f"pb {kind} {self.n} {BIG}"

    async def api(self, method: str, channel: str, kind: str) -> bool:
        """One post; True when it was refused with the pushback answer."""
        text = self.text(kind)
        resp = await self.http.post(self.c.api + method, json={"channel": channel, "text": text},
                                    headers={"Authorization": f"Bearer {self.user['token']}"})
        body = resp.json()
        if body.get("ok"):
            assert resp.status_code == 200
            self.accepted.append((text, body["ts"]))
            return False
        assert (resp.status_code, body["error"]) == (429, "ratelimited"), body
        assert resp.headers["retry-after"] == "1"
        self.refused.append(text)
        return True

    async def rtm(self, channel: str) -> bool:
        """A message sent over RTM, as the gateway relays it (/internal/rtm.post)."""
        text = self.text("rtm")
        resp = await self.http.post(
            self.c.root + "/internal/rtm.post", headers=self.c.internal_headers(),
            json={"user": self.user["id"], "channel": channel, "text": text})
        body = resp.json()
        assert resp.status_code == 200, body  # the gateway relays only a 200's error
        if body.get("ok"):
            self.accepted.append((text, body["ts"]))
            return False
        assert body["error"] == "ratelimited", body
        self.refused.append(text)
        return True

    async def until_refused(self, method: str, channel: str) -> None:
        """Post (IN_FLIGHT at a time) until one is refused; bounded."""
        refused = False

        async def one() -> None:
            nonlocal refused
            refused |= await self.api(method, channel, "api")

        while not refused:
            assert self.n < MAX_POSTS, "fanout never counted as behind"
            async with trio.open_nursery() as nursery:
                for _ in range(IN_FLIGHT):
                    nursery.start_soon(one)

    async def once_refused(self, attempt: Any) -> None:
        """Retry ``attempt`` until it is refused: a refusal lasts a second from the last
        behind answer, so on a busy machine one may slip through (it then counts as
        accepted, and must be delivered like any other)."""
        for _ in range(MAX_TRIES):
            if await attempt():
                return
            await self.api("chat.postMessage", self.channel, "api")  # renew "behind"
        raise AssertionError("never refused")


async def receive(rtm: Any, channel: str, count: int) -> list[str]:
    """The texts of the next ``count`` test messages in ``channel``."""
    got: list[str] = []
    while len(got) < count:
        event = await rtm.next(lambda e: e.get("type") == "message"
                               and e.get("channel") == channel
                               and str(e.get("text", "")).startswith("pb "), timeout=60)
        got.append(event["text"])
    return got


async def create_channel(c: Cluster, http: httpx.AsyncClient, token: str, name: str) -> str:
    resp = await http.post(c.api + "conversations.create", json={"name": name},
                           headers={"Authorization": f"Bearer {token}"})
    assert resp.json()["ok"], resp.text
    return resp.json()["channel"]["id"]


async def history_texts(c: Cluster, http: httpx.AsyncClient, token: str,
                        channel: str) -> set[str]:
    texts: set[str] = set()
    cursor = ""
    while True:
        resp = (await http.post(c.api + "conversations.history", json={
            "channel": channel, "limit": 1000, "cursor": cursor},
            headers={"Authorization": f"Bearer {token}"})).json()
        assert resp["ok"], resp
        texts |= {m["text"] for m in resp["messages"]}
        cursor = resp.get("response_metadata", {}).get("next_cursor", "")
        if not cursor:
            return texts


async def test_behind_channel_refuses_posts_then_delivers_accepted_once_in_order(
    tmp_path: Path,
) -> None:
    with private_cluster(tmp_path, fanout_behind_items=BEHIND_ITEMS) as c:
        ws = c.seed(2)
        poster_user, member = ws["users"]
        general = ws["channels"][0]["id"]
        gateway = c.processes("gateway_server")[0]["pid"]
        async with httpx.AsyncClient(timeout=60) as http, \
                rtm_session(c, member["token"]) as rtm:
            # nobody connected is in this one: no gateway link follows it
            quiet = await create_channel(c, http, poster_user["token"], "quiet")
            poster = Poster(c, http, poster_user, general)
            os.kill(gateway, signal.SIGSTOP)
            try:
                await poster.until_refused("chat.postMessage", general)
                await poster.once_refused(lambda: poster.api("chat.meMessage", general, "me"))
                await poster.once_refused(lambda: poster.rtm(general))
                # another channel still takes posts, however far behind #general is
                assert not await poster.api("chat.postMessage", quiet, "quiet")
            finally:
                os.kill(gateway, signal.SIGCONT)

            in_general = [(ts, text) for text, ts in poster.accepted
                          if not text.startswith("pb quiet")]
            expected = [text for _, text in sorted(in_general)]
            got = await receive(rtm, general, len(expected))
            assert got == expected, "every accepted post once, in order, no refused one"
            # then one more, as a client does after a 429: after Retry-After. It comes next:
            # nothing was duplicated, and nothing refused turns up late
            for _ in range(10):
                if not await poster.api("chat.postMessage", general, "end"):
                    break
                await trio.sleep(1)  # the Retry-After the answer asked for
            assert await receive(rtm, general, 1) == [poster.accepted[-1][0]]
            assert poster.refused
            print(f"pushback: {len(poster.accepted)} posts accepted, "
                  f"{len(poster.refused)} refused")
            # refused before anything was written: not in the channel's history either
            stored = await history_texts(c, http, poster_user["token"], general)
            assert stored.isdisjoint(poster.refused)
            assert set(expected) <= stored
