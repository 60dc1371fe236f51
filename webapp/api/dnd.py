"""dnd.*: do not disturb. We keep no DND schedules, so a user's DND session is its snooze
(see webapp/actions/dnd.py)."""

from __future__ import annotations

import re
from typing import Any

from webapp.actions import dnd as actions
from webapp.api import Ctx, args, method
from webapp.params import ApiError

_MINUTES_RE = re.compile(r"\d{1,9}")


def _minutes(value: Any) -> int:
    """``num_minutes``: a whole number of minutes, 1..MAX_SNOOZE_MINUTES, typed or as a
    string. Absent is Slack's ``missing_duration``; anything else unusable (a fraction,
    zero, negative, beyond the cap) is ``invalid_arguments``: a snooze is never clamped to
    something the caller did not ask for."""
    if value is None or value == "":
        raise ApiError("missing_duration")
    if isinstance(value, str) and _MINUTES_RE.fullmatch(value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError("invalid_arguments")
    if not 1 <= value <= actions.MAX_SNOOZE_MINUTES:
        raise ApiError("invalid_arguments")
    return value


@method("dnd.setSnooze", tier=2, num_minutes=args.Custom(_minutes))
async def set_snooze(ctx: Ctx, num_minutes: int) -> dict[str, Any]:
    return await actions.set_snooze(ctx.rt, ctx.who, num_minutes)


@method("dnd.endSnooze", tier=2)
async def end_snooze(ctx: Ctx) -> dict[str, Any]:
    return await actions.end_snooze(ctx.rt, ctx.who)


@method("dnd.endDnd", tier=2)
async def end_dnd(ctx: Ctx) -> dict[str, Any]:
    await actions.end_dnd(ctx.rt, ctx.who)
    return {}


@method("dnd.info", tier=3, user=args.user(missing=None))
async def info(ctx: Ctx, user: str | None) -> dict[str, Any]:
    return await actions.info(ctx.rt, ctx.who, user)


@method("dnd.teamInfo", tier=2,
        users=args.IdList(args.USER_ID_RE, "user_not_found", missing="invalid_arguments",
                          min_n=1, max_n=actions.MAX_TEAM_INFO_USERS,
                          too_many="too_many_users"))
async def team_info(ctx: Ctx, users: list[str]) -> dict[str, Any]:
    return {"users": await actions.team_info(ctx.rt, ctx.who, users)}
