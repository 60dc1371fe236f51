"""Messages sent over the RTM socket (``{"type":"message","id":N,"channel":C,"text":T}``):
posted as chat.postMessage would, answered with Slack's reply (``ok``, ``reply_to``, ``ts``,
``text``) or its RTM error, in order per socket, bounded, and fanned out to every member,
the sender's sockets included."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import trio
from trio_websocket import ConnectionClosed

from gateway_server.client import MAX_SENDS_IN_FLIGHT
from tests.conftest import Cluster, RtmSession, rtm_session
from tests.test_api_chat import Ws, history, make_ws
from tests.test_webapp_robustness import hold_stream_lock


@pytest.fixture(scope="module")
def ws(cluster: Cluster) -> Iterator[Ws]:
    yield make_ws(cluster)


def message(frame_id: Any, channel: str, text: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "id": frame_id, "channel": channel, "text": text, **extra}


async def answer(rtm: RtmSession, frame_id: Any) -> dict[str, Any]:
    return await rtm.next(lambda e: e.get("reply_to") == frame_id and "ok" in e)


async def seen_or_next(rtm: RtmSession, match: dict[str, Any]) -> dict[str, Any]:
    """The event, whether it came before the reply we waited for (the webapp sends a post's
    events before it answers) or comes later."""
    def ok(event: dict[str, Any]) -> bool:
        return all(event.get(k) == v for k, v in match.items())

    return next((e for e in rtm.seen if ok(e)), None) or await rtm.next(ok)


async def still_usable(rtm: RtmSession) -> None:
    ping = secrets.randbelow(10**9) + 10**6
    await rtm.send({"type": "ping", "id": ping})
    await rtm.next({"type": "pong", "reply_to": ping})


async def test_an_rtm_message_is_posted_answered_and_fanned_out(ws: Ws) -> None:
    async with rtm_session(ws.cluster, ws.a["token"]) as sender, \
            rtm_session(ws.cluster, ws.b["token"]) as member:
        await sender.send(message(1, ws.general, "over the socket ☃"))
        reply = await answer(sender, 1)
        assert set(reply) == {"ok", "reply_to", "ts", "text"}
        assert (reply["ok"], reply["text"]) == (True, "over the socket ☃")
        for rtm in (sender, member):  # the sender's own socket gets it too, as in Slack
            got = await seen_or_next(rtm, {"type": "message", "ts": reply["ts"]})
            assert (got["user"], got["text"], got["channel"]) == (
                ws.a["id"], "over the socket ☃", ws.general)
            assert got["client_msg_id"]  # every RTM post carries one: a retry is safe
    stored = history(ws.cluster, ws.b["token"], ws.general)[0]
    assert (stored["ts"], stored["user"], stored["text"]) == (reply["ts"], ws.a["id"],
                                                              "over the socket ☃")


async def test_rtm_messages_by_name_in_threads_and_with_a_client_msg_id(ws: Ws) -> None:
    async with rtm_session(ws.cluster, ws.a["token"]) as rtm:
        await rtm.send(message("p", "#general", "parent"))
        parent = await answer(rtm, "p")
        await rtm.send(message(2, ws.general, "in thread", thread_ts=parent["ts"]))
        reply = await answer(rtm, 2)
        replied = await seen_or_next(rtm, {"subtype": "message_replied"})
        assert replied["message"]["ts"] == parent["ts"]
        assert replied["message"]["latest_reply"] == reply["ts"]
        cmid = "rtm-" + secrets.token_hex(6)
        await rtm.send(message(3, ws.general, "once", client_msg_id=cmid))
        first = await answer(rtm, 3)
        await rtm.send(message(4, ws.general, "once", client_msg_id=cmid))
        again = await answer(rtm, 4)
    assert first["ok"] and again["ts"] == first["ts"]
    assert [m.get("client_msg_id") for m in history(ws.cluster, ws.a["token"], ws.general)
            ].count(cmid) == 1


async def test_replies_come_in_the_order_sent(ws: Ws) -> None:
    async with rtm_session(ws.cluster, ws.a["token"]) as rtm:
        for i in range(1, MAX_SENDS_IN_FLIGHT + 1):
            await rtm.send(message(i, ws.general, f"burst {i}"))
        answers = [await rtm.next(lambda e: "reply_to" in e and "ok" in e)
                   for _ in range(MAX_SENDS_IN_FLIGHT)]
    assert [a["reply_to"] for a in answers] == list(range(1, MAX_SENDS_IN_FLIGHT + 1))
    assert all(a["ok"] for a in answers)
    assert [a["ts"] for a in answers] == sorted(a["ts"] for a in answers)


def _error(frame_id: int, msg: str) -> dict[str, Any]:
    return {"ok": False, "reply_to": frame_id, "error": {"code": 2, "msg": msg}}


async def test_bad_rtm_messages_are_refused_and_change_nothing(ws: Ws) -> None:
    old = history(ws.cluster, ws.a["token"], ws.archived)[0]["ts"]
    other = ws.other["channels"][0]["id"]
    cases: list[tuple[str, dict[str, Any]]] = [
        (json.dumps({"type": "message", "id": 10, "text": "no channel"}),
         _error(10, "channel_not_found")),
        (json.dumps(message(11, 7, "x")), _error(11, "channel_not_found")),
        (json.dumps(message(12, ws.general, None)), _error(12, "message text is missing")),
        (json.dumps(message(13, ws.general, "")), _error(13, "message text is missing")),
        (json.dumps(message(14, ws.general, 5)), _error(14, "invalid_arguments")),
        (json.dumps(message(15, ws.general, ["x"])), _error(15, "invalid_arguments")),
        (json.dumps(message(16, ws.general, "a\ud800b")), _error(16, "invalid_arguments")),
        (json.dumps(message(17, ws.pub, "x")), _error(17, "not_in_channel")),
        (json.dumps(message(18, ws.priv, "x")), _error(18, "channel_not_found")),
        (json.dumps(message(19, ws.archived, "x")), _error(19, "is_archived")),
        (json.dumps(message(20, other, "x")), _error(20, "channel_not_found")),
        (json.dumps(message(21, "no-such-channel", "x")), _error(21, "channel_not_found")),
        (json.dumps(message(22, "not a channel!", "x")), _error(22, "channel_not_found")),
        (json.dumps(message(23, ws.general, "x", thread_ts="1000000000.000001")),
         _error(23, "thread_not_found")),
        (json.dumps(message(24, ws.general, "x", thread_ts=old)),
         _error(24, "thread_not_found")),
        (json.dumps(message(25, ws.general, "x", thread_ts=5)),
         _error(25, "thread_not_found")),
        (json.dumps(message(26, ws.general, "x", client_msg_id=["x"])),
         _error(26, "invalid_arguments")),
        (json.dumps({"type": "message", "channel": ws.general}),
         {"type": "error", "error": {"code": 2, "msg": "message text is missing"}}),
    ]
    before = await trio.to_thread.run_sync(ws.snapshot)
    async with rtm_session(ws.cluster, ws.b["token"]) as rtm:
        for sent, expected in cases:
            await rtm.ws.send_message(sent)
            got = await rtm.next(lambda e: "error" in e)
            assert got == expected, sent[:80]
            await still_usable(rtm)
    assert await trio.to_thread.run_sync(ws.snapshot) == before


async def test_an_oversized_frame_closes_the_socket_and_posts_nothing(ws: Ws) -> None:
    before = await trio.to_thread.run_sync(ws.snapshot)
    async with rtm_session(ws.cluster, ws.a["token"]) as rtm:
        await rtm.ws.send_message(json.dumps(message(1, ws.general, "x" * 17_000)))
        with pytest.raises(ConnectionClosed):
            await rtm.next(timeout=10)
    assert await trio.to_thread.run_sync(ws.snapshot) == before
    async with rtm_session(ws.cluster, ws.a["token"]) as rtm:  # the next one works
        await rtm.send(message(2, ws.general, "x" * 4000))
        assert (await answer(rtm, 2))["ok"]


async def test_sends_over_the_bound_get_an_error_at_once(ws: Ws) -> None:
    """The first message is held in the database (its channel's stream locked), eight more
    fill the socket's queue, and the rest are refused at once; released, the held and the
    queued ones are posted and answered in order."""
    cmid = "held-" + secrets.token_hex(6)
    pending = f"{ws.cluster.settings.redis_prefix}idem:{ws.a['id']}:{cmid}"
    extra = 3
    async with rtm_session(ws.cluster, ws.a["token"]) as rtm:
        lock = await trio.to_thread.run_sync(hold_stream_lock, ws.cluster, ws.general)
        try:
            await rtm.send(message(0, ws.general, "held", client_msg_id=cmid))
            with redis.Redis.from_url(ws.cluster.settings.redis_url) as r, trio.fail_after(5):
                while r.get(pending) != b"pending":  # in the webapp, waiting for the lock
                    await trio.sleep(0.02)
            for i in range(1, MAX_SENDS_IN_FLIGHT + extra + 1):
                await rtm.send(message(i, ws.general, f"queued {i}"))
            with trio.fail_after(2):  # refused while the held post still waits
                refusals = [await rtm.next(lambda e: e.get("ok") is False)
                            for _ in range(extra)]
        finally:
            lock.rollback()
            lock.close()
        assert refusals == [_error(MAX_SENDS_IN_FLIGHT + i, "ratelimited")
                            for i in range(1, extra + 1)]
        answers = [await answer(rtm, i) for i in range(MAX_SENDS_IN_FLIGHT + 1)]
    assert all(a["ok"] for a in answers)
    assert [a["ts"] for a in answers] == sorted(a["ts"] for a in answers)
