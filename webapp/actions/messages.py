"""Posting messages: the one transaction, and ``client_msg_id`` idempotency."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from webapp import store
from webapp.params import ApiError
from webapp.runtime import Runtime

MAX_TEXT = 40_000
# client_msg_id idempotency (see _post_once). A retry that finds its id "pending" waits this
# long for the attempt in flight to answer (a post takes milliseconds) before it asks the
# database, which decides either way: a claim left by a killed process costs a retry no more.
_IDEM_WAIT_S = 0.5
_IDEM_POLL_S = 0.05
_PENDING = b"pending"
# a claim outlives the longest request that can hold it by this much (scheduling, GC pauses)
_PENDING_MARGIN_S = 2.0


async def post(rt: Runtime, who: store.Identity, channel: str, text: str,
               thread_us: int | None, cmid: str | None) -> dict[str, Any]:
    """Post as ``who``; the reply body of chat.postMessage."""
    if cmid is None:
        return await _post(rt, who, channel, text, thread_us, None)
    return await _post_once(rt, who, channel, text, thread_us, cmid)


async def _post(rt: Runtime, who: store.Identity, channel: str, text: str,
                thread_us: int | None, cmid: str | None) -> dict[str, Any]:
    try:
        _, message = await store.post_message(rt.db, channel, who, text, thread_us, cmid)
    except store.PostRefused as exc:
        raise ApiError(exc.error) from exc
    # an earlier attempt with this client_msg_id may have committed the message and its
    # event (posted is None): if it died before notifying, a channel server's head check
    # delivers the event
    return {"channel": channel, "ts": message["ts"], "message": message}


def pending_lease_s(rt: Runtime) -> int:
    """How long a "pending" claim stands: the longest a post can run once it holds one
    (every transaction attempt waiting out InnoDB's lock wait timeout, then the whole notify
    deadline) plus a margin. By then a live attempt has answered and a dead one's claim is
    gone; nothing is stuck "pending" for the reply cache's 24 h."""
    retry = rt.db.retry
    transaction_s = retry.attempts * (rt.db.lock_wait_timeout_s + retry.cap_s)
    return math.ceil(transaction_s + rt.settings.notify_deadline_s + _PENDING_MARGIN_S)


async def _post_once(rt: Runtime, who: store.Identity, channel: str, text: str,
                     thread_us: int | None, cmid: str) -> dict[str, Any]:
    """client_msg_id idempotency: a retried post returns the first post's reply.

    Redis is the fast path: the reply cached for 24 h, and a short "pending" claim while an
    attempt is in flight. The database makes it exact: post_message returns the message an
    earlier attempt committed with this id, so a retry after the webapp died mid-post, or
    after Redis lost the key, still answers ok with exactly one message stored."""
    key = rt.key("idem", who.user_id, cmid)
    claimed, reply = await _claim(rt, key)
    if reply is not None:
        return reply
    try:
        reply = await _post(rt, who, channel, text, thread_us, cmid)
    except BaseException:
        if claimed:
            await rt.redis.delete(key)
        raise
    await rt.redis.set(key, json.dumps(reply), ex=rt.settings.idempotency_ttl_s)
    return reply


async def _claim(rt: Runtime, key: str) -> tuple[bool, dict[str, Any] | None]:
    """Mark an attempt in flight, or wait briefly for the one that is: (True, None) when
    claimed, (False, its reply) once it answered, (False, None) when it did not answer in
    _IDEM_WAIT_S (slow, or died with its process): the caller then posts unclaimed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _IDEM_WAIT_S
    lease = pending_lease_s(rt)
    while True:
        if await rt.redis.set(key, _PENDING, nx=True, ex=lease):
            return True, None
        held = await rt.redis.get(key)
        if held is not None and held != _PENDING:
            return False, json.loads(held)
        if loop.time() >= deadline:
            return False, None
        await asyncio.sleep(_IDEM_POLL_S)
