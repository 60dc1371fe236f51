"""bots.*"""

from __future__ import annotations

from typing import Any

from webapp.api import Ctx, args, method
from webapp.params import ApiError
from webapp.slack.shapes import bot_shape
from webapp.store import directory


@method("bots.info", tier=3,
        bot=args.Pattern(args.BOT_ID_RE, "bot_not_found", "bot_not_found",
                         wrong_type="bot_not_found"),
        team_id=args.Text(max_len=32))
async def info(ctx: Ctx, bot: str, team_id: str | None) -> dict[str, Any]:
    """A bot of the caller's workspace (bot ids are B…, kept on the bot's user)."""
    if team_id is not None and team_id != ctx.who.team_id:
        raise ApiError("team_not_found")
    row = await directory.bot_user(ctx.rt.db, ctx.who.team_id, bot)
    if row is None:
        raise ApiError("bot_not_found")
    return {"bot": bot_shape(row)}
