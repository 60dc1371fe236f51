"""api.* and auth.*"""

from __future__ import annotations

from typing import Any

from webapp.api import Ctx, method
from webapp.params import ApiError, encodable


@method("api.test", tier=4, auth=False)
async def api_test(ctx: Ctx) -> dict[str, Any]:
    args = {k: v for k, v in ctx.raw.items() if k != "token"}
    if not encodable(args):
        raise ApiError("invalid_arguments")
    if "error" in args and isinstance(args["error"], str) and args["error"]:
        raise ApiError(args["error"][:100], args=args)
    return {"args": args}


@method("auth.test", tier=4)
async def auth_test(ctx: Ctx) -> dict[str, Any]:
    who = ctx.who
    reply = {"url": f"https://{who.team_domain}.backchannel.local/", "team": who.team_name,
             "user": who.user_name, "team_id": who.team_id, "user_id": who.user_id,
             "is_enterprise_install": False}
    if who.bot_id:
        reply["bot_id"] = who.bot_id
    return reply
