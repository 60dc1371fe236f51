"""team.*"""

from __future__ import annotations

from typing import Any

from webapp.api import Ctx, args, method
from webapp.params import ApiError
from webapp.slack.shapes import team_shape
from webapp.store import directory


@method("team.info", tier=3, team=args.Text(max_len=32), domain=args.Text(max_len=255))
async def info(ctx: Ctx, team: str | None, domain: str | None) -> dict[str, Any]:
    """The caller's workspace; asking for any other (by id or domain) finds none."""
    who = ctx.who
    if (team is not None and team != who.team_id) or (
        team is None and domain is not None and domain != who.team_domain
    ):
        raise ApiError("team_not_found")
    row = await directory.get_team(ctx.rt.db, who.team_id)
    if row is None:
        raise ApiError("team_not_found")
    return {"team": team_shape(row)}


def _visibility(value: Any) -> str:
    if value is None or value == "":
        return "all"
    if value not in ("all", "visible", "hidden"):
        raise ApiError("invalid_arguments")
    return value


@method("team.profile.get", tier=3, visibility=args.Custom(_visibility),
        team_id=args.Text(max_len=32))
async def profile_get(ctx: Ctx, visibility: str, team_id: str | None) -> dict[str, Any]:
    """The workspace's custom profile fields and their sections. We have none (no method
    defines them yet), so every visibility filter answers Slack's empty profile."""
    if team_id is not None and team_id != ctx.who.team_id:
        raise ApiError("team_access_not_granted")
    return {"profile": {"fields": [], "sections": []}}
