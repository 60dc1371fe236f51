"""Slack Web API methods. Each takes the runtime, the caller and the parameters and returns
the reply body (without ``ok``); failures raise :class:`ApiError` with Slack's code."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from cluster import ids
from webapp import resume, store
from webapp.params import ApiError, Params, encodable
from webapp.runtime import Runtime
from webapp.shapes import channel_shape

MAX_TEXT = 40_000
NAME_RE = re.compile(r"^[a-z0-9_\-]+$")
# client_msg_id idempotency (see _post_once). A retry that finds its id "pending" waits this
# long for the attempt in flight to answer (a post takes milliseconds) before it asks the
# database, which decides either way: a claim left by a killed process costs a retry no more.
_IDEM_WAIT_S = 0.5
_IDEM_POLL_S = 0.05
_PENDING = b"pending"
# a claim outlives the longest request that can hold it by this much (scheduling, GC pauses)
_PENDING_MARGIN_S = 2.0

Handler = Callable[[Runtime, store.Identity, Params], Awaitable[dict[str, Any]]]
METHODS: dict[str, Handler] = {}


def method(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        METHODS[name] = fn
        return fn

    return register


async def visible_channel(rt: Runtime, who: store.Identity, channel_id: str) -> dict[str, Any]:
    """The channel row if the caller may see it; private channels hide from non-members."""
    row = await store.get_channel(rt.db, channel_id)
    if row is None or row["team_id"] != who.team_id:
        raise ApiError("channel_not_found")
    if row["is_private"] and not await store.is_member(rt.db, channel_id, who.user_id):
        raise ApiError("channel_not_found")
    return row


@method("api.test")
async def api_test(rt: Runtime, who: store.Identity, p: Params) -> dict[str, Any]:
    args = {k: v for k, v in p.raw.items() if k != "token"}
    if not encodable(args):
        raise ApiError("invalid_arguments")
    return {"args": args}


@method("auth.test")
async def auth_test(rt: Runtime, who: store.Identity, p: Params) -> dict[str, Any]:
    reply = {"url": f"https://{who.team_domain}.backchannel.local/", "team": who.team_name,
             "user": who.user_name, "team_id": who.team_id, "user_id": who.user_id,
             "is_enterprise_install": False}
    if who.bot_id:
        reply["bot_id"] = who.bot_id
    return reply


@method("chat.postMessage")
async def chat_post_message(rt: Runtime, who: store.Identity, p: Params) -> dict[str, Any]:
    channel = p.channel()
    text = p.text("text", max_len=10 * MAX_TEXT)
    if text is None:
        raise ApiError("no_text")
    if len(text) > MAX_TEXT:
        raise ApiError("msg_too_long")
    thread = p.text("thread_ts", max_len=32)
    try:
        thread_us = ids.parse_ts(thread) if thread else None
    except ValueError as exc:
        raise ApiError("thread_not_found") from exc
    cmid = p.text("client_msg_id", max_len=64)
    if cmid is None:
        return await _post(rt, who, channel, text, thread_us, None)
    return await _post_once(rt, who, channel, text, thread_us, cmid)


async def _post(rt: Runtime, who: store.Identity, channel: str, text: str,
                thread_us: int | None, cmid: str | None) -> dict[str, Any]:
    try:
        posted, message = await store.post_message(rt.db, channel, who, text, thread_us, cmid)
    except store.PostRefused as exc:
        raise ApiError(exc.error) from exc
    # None: an earlier attempt with this client_msg_id committed the message and its event;
    # if it died before notifying, the channel server's head check delivers the event
    if posted is not None:
        await rt.notify([posted])
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


def _check_name(name: str | None) -> str:
    if not name:
        raise ApiError("invalid_name_required")
    if len(name) > 80:
        raise ApiError("invalid_name_maxlength")
    if not NAME_RE.match(name):
        raise ApiError("invalid_name_specials")
    if not re.search(r"[a-z0-9]", name):
        raise ApiError("invalid_name_punctuation")
    return name


@method("conversations.create")
async def conversations_create(rt: Runtime, who: store.Identity, p: Params) -> dict[str, Any]:
    name = _check_name(p.text("name", max_len=100_000))
    private = p.flag("is_private")
    try:
        row, posted = await store.create_channel(rt.db, who.team_id, who.user_id, name,
                                                 private, channel_shape)
    except store.Conflict as exc:
        raise ApiError("name_taken") from exc
    await rt.notify(posted)
    return {"channel": channel_shape(row, is_member=True)}


@method("conversations.join")
async def conversations_join(rt: Runtime, who: store.Identity, p: Params) -> dict[str, Any]:
    row = await visible_channel(rt, who, p.channel())
    if row["is_archived"]:
        raise ApiError("is_archived")
    if row["is_private"]:
        raise ApiError("method_not_supported_for_channel_type")
    posted = await store.join_channel(rt.db, row, who.user_id, channel_shape)
    await rt.notify(posted)
    reply: dict[str, Any] = {"channel": channel_shape(row, is_member=True)}
    # a join that only repaired a missing lookup row still posts channel_joined: the user
    # was already a member, which is what the warning says
    if not any(p.event.get("type") == "member_joined_channel" for p in posted):
        reply["warning"] = "already_in_channel"
        reply["response_metadata"] = {"warnings": ["already_in_channel"]}
    return reply


@method("conversations.info")
async def conversations_info(rt: Runtime, who: store.Identity, p: Params) -> dict[str, Any]:
    row = await visible_channel(rt, who, p.channel())
    member = await store.is_member(rt.db, row["id"], who.user_id)
    return {"channel": channel_shape(row, is_member=member)}


def _cursor_ts(cursor: str) -> int:
    try:
        raw = base64.b64decode(cursor.encode("ascii"), validate=True).decode("ascii")
        prefix, _, value = raw.partition(":")
        if prefix != "next_ts" or not value.isdigit():
            raise ValueError
        return int(value)
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise ApiError("invalid_cursor") from exc


def _ts_param(p: Params, name: str, error: str) -> int | None:
    value = p.text(name, max_len=32)
    if value is None:
        return None
    try:
        return ids.parse_ts(value if "." in value else value + ".000000")
    except ValueError as exc:
        raise ApiError(error) from exc


@method("conversations.history")
async def conversations_history(rt: Runtime, who: store.Identity, p: Params) -> dict[str, Any]:
    row = await visible_channel(rt, who, p.channel())
    limit = p.integer("limit", 100, 1, 999)
    inclusive = p.flag("inclusive")
    latest = _ts_param(p, "latest", "invalid_ts_latest")
    oldest = _ts_param(p, "oldest", "invalid_ts_oldest") or 0
    latest_inclusive = inclusive
    cursor = p.text("cursor", max_len=200)
    if cursor:
        latest, latest_inclusive = _cursor_ts(cursor), False
    rows = await store.history(rt.db, row["id"], latest_us=latest, oldest_us=oldest,
                               latest_inclusive=latest_inclusive, oldest_inclusive=inclusive,
                               limit=limit)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = ""
    if has_more:
        next_cursor = base64.b64encode(f"next_ts:{rows[-1]['ts_us']}".encode()).decode()
    return {"messages": [store.row_to_message(r, row["team_id"]) for r in rows],
            "has_more": has_more, "pin_count": 0, "channel_actions_ts": None,
            "channel_actions_count": 0, "response_metadata": {"next_cursor": next_cursor}}


@method("rtm.connect")
async def rtm_connect(rt: Runtime, who: store.Identity, p: Params) -> dict[str, Any]:
    """A single-use ticket for a gateway; with ``resume``, the socket replays what the
    client missed (docs/rtm.md)."""
    gateways = list((await rt.gateways()).values())
    if not gateways:
        raise ApiError("internal_error")
    grant: dict[str, Any] = {"user": who.user_id, "team": who.team_id}
    asked = resume.parse(p.raw.get("resume"))
    if asked is not None:
        grant["resume"] = asked  # judged when the gateway redeems the ticket
    ticket = secrets.token_urlsafe(24)
    await rt.redis.set(rt.key("rtm", ticket), json.dumps(grant),
                       ex=rt.settings.rtm_ticket_ttl_s)
    url = secrets.choice(gateways)
    return {"url": f"{url}/rtm?ticket={ticket}",
            "team": {"id": who.team_id, "name": who.team_name, "domain": who.team_domain},
            "self": {"id": who.user_id, "name": who.user_name}}


@method("users.getPresence")
async def users_get_presence(rt: Runtime, who: store.Identity, p: Params) -> dict[str, Any]:
    user = p.user() if p.raw.get("user") not in (None, "") else who.user_id
    if not await store.user_exists(rt.db, who.team_id, user):
        raise ApiError("user_not_found")
    state = await rt.presence(user)
    online = bool(state and state.get("online"))
    reply: dict[str, Any] = {"presence": "active" if online else "away", "online": online,
                             "auto_away": False, "manual_away": False,
                             "connection_count": int(state["connection_count"]) if state else 0}
    if state and state.get("last_activity"):
        reply["last_activity"] = int(state["last_activity"])
    return reply
