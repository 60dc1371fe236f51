"""usergroups.*"""

from __future__ import annotations

import re
from typing import Any

from webapp.actions import usergroups as actions
from webapp.api import Ctx, args, method
from webapp.params import ApiError
from webapp.slack.shapes import usergroup_shape

# the most members one usergroups.users.update may name
MAX_MEMBERS = 10_000


def _usergroup() -> args.Pattern:
    return args.Pattern(args.GROUP_ID_RE, "no_such_subteam", "no_such_subteam",
                        wrong_type="no_such_subteam")


def _same_team(ctx: Ctx, team_id: str | None) -> None:
    if team_id is not None and team_id != ctx.who.team_id:
        raise ApiError("invalid_team")


@method("usergroups.list", tier=2, include_users=args.Flag(), include_count=args.Flag(),
        include_disabled=args.Flag(), team_id=args.Text(max_len=32))
async def list_(ctx: Ctx, include_users: bool, include_count: bool, include_disabled: bool,
                team_id: str | None) -> dict[str, Any]:
    _same_team(ctx, team_id)
    return {"usergroups": await actions.listing(ctx.rt, ctx.who, include_users,
                                                include_count, include_disabled)}


@method("usergroups.users.list", tier=2, usergroup=_usergroup(),
        include_disabled=args.Flag(), team_id=args.Text(max_len=32))
async def users_list(ctx: Ctx, usergroup: str, include_disabled: bool,
                     team_id: str | None) -> dict[str, Any]:
    _same_team(ctx, team_id)
    row = await actions.existing(ctx.rt, ctx.who, usergroup, include_disabled)
    return {"users": await actions.member_ids(ctx.rt, row["id"])}


@method("usergroups.create", tier=2,
        name=args.Text(missing="missing_subteam_name", max_len=255, too_long="name_too_long"),
        handle=args.Text(max_len=81, too_long="bad_handle"),
        description=args.Text(max_len=1000, too_long="description_too_long"),
        channels=args.IdList(args.CHANNEL_ID_RE, "invalid_channel_provided", max_n=100,
                             too_many="invalid_channel_provided"),
        include_count=args.Flag(), team_id=args.Text(max_len=32))
async def create(ctx: Ctx, name: str, handle: str | None, description: str | None,
                 channels: list[str] | None, include_count: bool,
                 team_id: str | None) -> dict[str, Any]:
    _same_team(ctx, team_id)
    name = re.sub(r"\s+", " ", name).strip()
    if not name:
        raise ApiError("missing_subteam_name")
    handle = actions.handle_for(name, handle)
    prefs = await actions.default_channels(ctx.rt, ctx.who, channels or [])
    row = await actions.create(ctx.rt, ctx.who, name, handle, (description or "").strip(),
                               prefs)
    return {"usergroup": usergroup_shape(row, count=0 if include_count else None)}


@method("usergroups.users.update", tier=2, usergroup=_usergroup(),
        users=args.IdList(args.USER_ID_RE, "invalid_users", missing="no_users_provided",
                          min_n=1, max_n=MAX_MEMBERS, too_many="subteam_max_users_exceeded"),
        include_count=args.Flag(), team_id=args.Text(max_len=32))
async def users_update(ctx: Ctx, usergroup: str, users: list[str], include_count: bool,
                       team_id: str | None) -> dict[str, Any]:
    """``users`` is the whole new member list."""
    _same_team(ctx, team_id)
    changed = await actions.set_members(ctx.rt, ctx.who, usergroup, users)
    return {"usergroup": usergroup_shape(changed.row, users=changed.users,
                                         count=len(changed.users) if include_count else None)}


def _cleared(ctx: Ctx, name: str) -> bool:
    """An argument sent empty (``description=``, ``channels=``): Slack clears the field,
    where an absent one leaves it as it is."""
    return ctx.raw.get(name) in ("", [])


@method("usergroups.update", tier=2, usergroup=_usergroup(),
        name=args.Text(max_len=255, too_long="name_too_long"),
        handle=args.Text(max_len=81, too_long="bad_handle"),
        description=args.Text(max_len=1000, too_long="description_too_long"),
        channels=args.IdList(args.CHANNEL_ID_RE, "invalid_channel_provided", max_n=100,
                             too_many="invalid_channel_provided"),
        include_count=args.Flag(), team_id=args.Text(max_len=32))
async def update(ctx: Ctx, usergroup: str, name: str | None, handle: str | None,
                 description: str | None, channels: list[str] | None, include_count: bool,
                 team_id: str | None) -> dict[str, Any]:
    """Only the fields given change; the reply carries the members, as Slack's does."""
    _same_team(ctx, team_id)
    await actions.existing(ctx.rt, ctx.who, usergroup)
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = re.sub(r"\s+", " ", name).strip()
        if not changes["name"]:
            raise ApiError("missing_subteam_name")
    if handle is not None:
        changes["handle"] = actions.handle_for(name or "", handle)
    if description is not None or _cleared(ctx, "description"):
        changes["description"] = (description or "").strip()
    if channels is not None or _cleared(ctx, "channels"):
        changes["prefs"] = await actions.default_channels(ctx.rt, ctx.who, channels or [])
    row = await actions.update(ctx.rt, ctx.who, usergroup, changes)
    users = await actions.member_ids(ctx.rt, row["id"])
    return {"usergroup": usergroup_shape(row, users=users,
                                         count=len(users) if include_count else None)}


async def _toggle(ctx: Ctx, usergroup: str, include_count: bool, team_id: str | None,
                  disabled: bool) -> dict[str, Any]:
    _same_team(ctx, team_id)
    row = await actions.set_disabled(ctx.rt, ctx.who, usergroup, disabled)
    count = len(await actions.member_ids(ctx.rt, row["id"])) if include_count else None
    return {"usergroup": usergroup_shape(row, count=count)}


@method("usergroups.disable", tier=2, usergroup=_usergroup(), include_count=args.Flag(),
        team_id=args.Text(max_len=32))
async def disable(ctx: Ctx, usergroup: str, include_count: bool,
                  team_id: str | None) -> dict[str, Any]:
    """The group leaves usergroups.list (unless include_disabled) and gets date_delete;
    its members are kept for usergroups.enable."""
    return await _toggle(ctx, usergroup, include_count, team_id, True)


@method("usergroups.enable", tier=2, usergroup=_usergroup(), include_count=args.Flag(),
        team_id=args.Text(max_len=32))
async def enable(ctx: Ctx, usergroup: str, include_count: bool,
                 team_id: str | None) -> dict[str, Any]:
    return await _toggle(ctx, usergroup, include_count, team_id, False)
