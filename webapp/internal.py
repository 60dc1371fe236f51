"""Endpoints for the real-time tier and the ops CLI, guarded by the cluster's shared secret:
ticket redemption (gateways), event-log reads (channel servers repairing gaps) and seeding."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webapp import api as slack_api
from webapp import resume, store
from webapp.actions import messages
from webapp.actions import seed as seeding
from webapp.api import args
from webapp.api.args import Params
from webapp.params import ApiError, parse_body, query_params, read_body
from webapp.runtime import Runtime
from webapp.slack.shapes import channel_shape
from webapp.store import directory

log = logging.getLogger(__name__)
MAX_SEED_USERS = 10_000
MAX_HEADS = 5_000
MAX_REDEEM = 500


async def _params(request: Request, rt: Runtime) -> Params:
    body = await read_body(request, rt.settings.max_body_bytes)
    return Params({**query_params(request.scope["query_string"]),
                   **parse_body(body, request.headers.get("content-type", ""))})


async def redeem(rt: Runtime, p: Params) -> dict[str, Any]:
    """Single use: a replayed ticket fails. ``tickets`` (a list) redeems many at once, as a
    gateway does in a reconnect storm: one Redis script, one membership query and one heads
    read per shard for the whole batch; ``grants`` maps each ticket to its grant, or null.

    ``attempt`` (optional) names the gateway's request: the same request sent again (its
    answer was lost with a closed connection or a timeout) gets the same grants for
    REDEEM_RETRY_S, where a single-use ticket would otherwise answer a valid client 401."""
    attempt = p.raw.get("attempt")
    if not (isinstance(attempt, str) and 0 < len(attempt) <= 64):
        attempt = None
    if "tickets" not in p.raw:
        ticket = p.text("ticket", missing="invalid_auth", max_len=128)
        grant = (await _redeem_many(rt, [ticket], attempt))[ticket]
        if grant is None:
            raise ApiError("invalid_auth")
        return grant
    tickets = p.raw["tickets"]
    if not isinstance(tickets, list) or not 0 < len(tickets) <= MAX_REDEEM or not all(
        isinstance(t, str) and 0 < len(t) <= 128 for t in tickets
    ):
        raise ApiError("invalid_arguments")
    return {"grants": await _redeem_many(rt, list(dict.fromkeys(tickets)), attempt)}


# KEYS: the tickets' keys, then their "used" keys; ARGV: attempt ("" for none), ttl.
# A ticket is taken once; its grant stays readable for the same attempt only.
_TAKE_TICKETS = r"""
local n = #KEYS / 2
local out = {}
for i = 1, n do
  local raw = redis.call('GETDEL', KEYS[i])
  if raw then
    if ARGV[1] ~= '' then
      redis.call('SET', KEYS[n + i], ARGV[1] .. '\n' .. raw, 'EX', ARGV[2])
    end
    out[i] = raw
  else
    local used = redis.call('GET', KEYS[n + i])
    local mark = ARGV[1] .. '\n'
    if ARGV[1] ~= '' and used and string.sub(used, 1, #mark) == mark then
      out[i] = string.sub(used, #mark + 1)
    else
      out[i] = false
    end
  end
end
return out
"""
REDEEM_RETRY_S = 60


async def _redeem_many(rt: Runtime, tickets: list[str],
                       attempt: str | None = None) -> dict[str, Any]:
    keys = [rt.key("rtm", t) for t in tickets] + [rt.key("rtm-used", t) for t in tickets]
    raws = await rt.redis.eval(_TAKE_TICKETS, len(keys), *keys, attempt or "",
                               REDEEM_RETRY_S)
    grants = {t: json.loads(raw) for t, raw in zip(tickets, raws, strict=True) if raw}
    members = await store.many_memberships(rt.db, sorted({g["user"] for g in grants.values()}))
    for grant in grants.values():
        # the workspace's own stream (channel_created, team_join, user_change, ...): every
        # member's sockets follow it like a channel
        members[grant["user"]][grant["team"]] = resume.FROM_HEAD
    plans = await resume.plan_many(rt.db, {
        t: (g["user"], members[g["user"]], g["resume"]) for t, g in grants.items()
        if "resume" in g})
    out: dict[str, Any] = dict.fromkeys(tickets)
    for ticket, grant in grants.items():
        user = grant["user"]
        reply = {"user": user, "team": grant["team"], "channels": sorted(members[user])}
        if "resume" in grant:
            plan = plans[ticket]
            reply |= {"resume": plan.start, "resume_failed": plan.failed}
        out[ticket] = reply
    return out


async def events(rt: Runtime, p: Params) -> dict[str, Any]:
    stream = p.text("stream", missing="invalid_arguments", max_len=32)
    after = p.integer("after_seq", 0, 0, 2**62)
    limit = p.integer("limit", 100, 1, 1000)
    return {"events": await store.events_after(rt.db, stream, after, limit)}


async def heads(rt: Runtime, p: Params) -> dict[str, Any]:
    """Positions of many streams at once: a channel server taking streams over learns where
    each stands, and checks periodically that no last event on a quiet stream went missing."""
    raw = p.raw.get("streams")
    if isinstance(raw, str):
        raw = [s for s in raw.split(",") if s]
    if not isinstance(raw, list) or len(raw) > MAX_HEADS or not all(
        isinstance(s, str) and 0 < len(s) <= 32 for s in raw
    ):
        raise ApiError("invalid_arguments")
    return {"heads": await store.stream_heads(rt.db, list(dict.fromkeys(raw)))}


async def seed(rt: Runtime, p: Params) -> dict[str, Any]:
    """A workspace with N users, a bot and #general with everyone in it; with ``team_id``,
    N more users for that workspace (actions/seed.py). Users are written in bulk, a chunk
    per transaction, so 5,000 of them take seconds."""
    n = p.integer("users", 2, 1, MAX_SEED_USERS)
    team_id = p.text("team_id", max_len=32)
    if team_id is not None:
        return await seeding.add_users(rt, team_id, n)
    name = p.text("team_name", max_len=80) or "Backchannel Demo"
    team = await store.create_team(rt.db, name, p.text("domain", max_len=60) or "demo")
    users, bot = await seeding.create_people(rt, team, n)
    general, _ = await store.create_channel(rt.db, team["id"], users[0]["id"], "general",
                                            False, channel_shape, is_general=True)
    await seeding.join_general(rt, general, [u["id"] for u in users[1:]] + [bot["id"]])
    return {"team": team, "users": users, "bot": bot,
            "channels": [{"id": general["id"], "name": "general"}]}


# a message sent over an RTM socket: what chat.postMessage takes, as a gateway relays it
_RTM_POST = {
    "channel": args.ChannelRef(),
    "text": args.Text(max_len=10 * messages.MAX_TEXT),
    "thread_ts": args.Ts("thread_not_found", bare_seconds=False),
    "client_msg_id": args.Text(max_len=64),
}


async def rtm_post(rt: Runtime, p: Params) -> dict[str, Any]:
    """Post for the user a gateway's socket belongs to (``user``): the same action, checks
    and rate limit as chat.postMessage. Answers what the RTM reply carries."""
    user = p.text("user", missing="invalid_auth", max_len=32)
    who = await directory.identity_for_user(rt.db, user or "")
    if who is None:
        raise ApiError("invalid_auth")
    limit = slack_api.find("chat.postMessage").per_minute(rt.settings.rate_limit_per_minute)
    if await rt.limiter.wait_ms(rt.key("rl", who.user_id, "chat.postMessage"), limit) > 0:
        raise ApiError("ratelimited")
    given = args.parse_all(_RTM_POST, p.raw)
    draft = messages.Draft(messages.content(given["text"], None, None), given["thread_ts"])
    try:
        reply = await messages.post(rt, who, given["channel"], draft, given["client_msg_id"])
    except ApiError as exc:
        if exc.status == 429:  # pushback: an RTM "ratelimited" error, relayed by the gateway
            raise ApiError(exc.error) from exc
        raise
    return {"channel": reply["channel"], "ts": reply["ts"], "text": reply["message"]["text"]}


def routes(guard: Callable[[Request], None], on_error: Callable[[ApiError], Response],
           reply: Callable[[dict[str, Any]], Response]) -> list[Route]:
    def endpoint(fn: Callable[[Runtime, Params], Any]) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            rt: Runtime = request.app.state.rt
            try:
                guard(request)
                with rt.outbox.request() as committed:
                    try:
                        body = await fn(rt, await _params(request, rt))
                    finally:
                        await asyncio.shield(rt.outbox.flush(committed))
                return reply({"ok": True, **body})
            except ApiError as exc:
                return on_error(exc)
            except Exception:
                log.exception("internal endpoint %s failed", request.url.path)
                return on_error(ApiError("internal_error", status=500))

        return handle

    return [
        Route("/internal/rtm.redeem", endpoint(redeem), methods=["POST"]),
        Route("/internal/events", endpoint(events), methods=["GET", "POST"]),
        Route("/internal/seed", endpoint(seed), methods=["POST"]),
        Route("/internal/heads", endpoint(heads), methods=["POST"]),
        Route("/internal/rtm.post", endpoint(rtm_post), methods=["POST"]),
    ]
