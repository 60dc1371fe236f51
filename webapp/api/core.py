"""api.* and auth.*"""

from __future__ import annotations

from typing import Any

from webapp.api import Ctx, args, method
from webapp.params import ApiError, encodable
from webapp.store import directory


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


@method("auth.revoke", tier=3, test=args.Flag())
async def auth_revoke(ctx: Ctx, test: bool) -> dict[str, Any]:
    """Revoke the calling token: from the reply on, every call with it answers
    invalid_auth on every webapp process. ``test`` only checks the token. An RTM socket
    already open with it stays open (docs/api.md)."""
    if ctx.token is None:
        raise ApiError("not_authed")
    if test:
        return {"revoked": False}
    # the directory first (the truth for every cache miss), then the marker that shuts the
    # token out of identity caches; a retry after a failed marker write repeats both
    await directory.delete_token(ctx.rt.db, ctx.token)
    await ctx.rt.mark_revoked(ctx.token)
    return {"revoked": True}
