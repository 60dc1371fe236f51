"""users.*"""

from __future__ import annotations

from typing import Any

from webapp import store
from webapp.api import Ctx, args, method
from webapp.params import ApiError


@method("users.getPresence", tier=3, user=args.user(missing=None))
async def get_presence(ctx: Ctx, user: str | None) -> dict[str, Any]:
    rt, who = ctx.rt, ctx.who
    user = user or who.user_id
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
