"""rtm.*"""

from __future__ import annotations

import json
import secrets
from typing import Any

from webapp import resume
from webapp.api import Ctx, args, method
from webapp.params import ApiError


@method("rtm.connect", tier=1, resume=args.Custom(resume.parse))
async def rtm_connect(ctx: Ctx, resume: dict[str, Any] | None) -> dict[str, Any]:
    """A single-use ticket for a gateway; with ``resume``, the socket replays what the
    client missed (docs/rtm.md)."""
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
    url = secrets.choice(gateways)
    return {"url": f"{url}/rtm?ticket={ticket}",
            "team": {"id": who.team_id, "name": who.team_name, "domain": who.team_domain},
            "self": {"id": who.user_id, "name": who.user_name}}
