"""rtm.*"""

from __future__ import annotations

import json
import secrets
from typing import Any

from webapp import resume
from webapp.actions import rtm as rtm_actions
from webapp.api import Ctx, args, method
from webapp.params import ApiError


@method("rtm.connect", tier=1, resume=args.Custom(resume.parse))
async def rtm_connect(ctx: Ctx, resume: dict[str, Any] | None) -> dict[str, Any]:
    """A single-use ticket for a gateway; with ``resume``, the socket replays what the
    client missed (docs/rtm.md)."""
    who = ctx.who
    return {"url": await _ticket_url(ctx, resume),
            "team": {"id": who.team_id, "name": who.team_name, "domain": who.team_domain},
            "self": {"id": who.user_id, "name": who.user_name}}


@method("rtm.start", tier=1, resume=args.Custom(resume.parse), include_locale=args.Flag(),
        mpim_aware=args.Flag(), no_unreads=args.Flag(), no_latest=args.Flag(),
        simple_latest=args.Flag(), presence_sub=args.Flag(True),
        batch_presence_aware=args.Flag())
async def rtm_start(ctx: Ctx, resume: dict[str, Any] | None, include_locale: bool,
                    mpim_aware: bool, **accepted: bool) -> dict[str, Any]:
    """Slack's deprecated start, still used by older clients and slack_sdk's legacy RTM
    client: rtm.connect's ticket plus the workspace snapshot (actions/rtm.py). The other
    flags are accepted and change nothing here: the snapshot carries no latest messages or
    unread counts, and presence events are not sent yet."""
    snap = await rtm_actions.snapshot(ctx.rt, ctx.who, mpim_aware=mpim_aware,
                                      locale=include_locale)
    # the ticket last: building a large workspace's snapshot must not eat its lifetime
    return {"url": await _ticket_url(ctx, resume), **snap}


async def _ticket_url(ctx: Ctx, resume: dict[str, Any] | None) -> str:
    rt, who = ctx.rt, ctx.who
    gateways = list((await rt.gateways()).values())
    if not gateways:
        raise ApiError("internal_error")
    grant: dict[str, Any] = {"user": who.user_id, "team": who.team_id}
    if resume is not None:
        grant["resume"] = resume  # judged when the gateway redeems the ticket
    ticket = secrets.token_urlsafe(24)
    await rt.redis.set(rt.key("rtm", ticket), json.dumps(grant),
                       ex=rt.settings.rtm_ticket_ttl_s)
    return f"{secrets.choice(gateways)}/rtm?ticket={ticket}"
