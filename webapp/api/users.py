"""users.*"""

from __future__ import annotations

from typing import Any

from webapp.actions import channels as channel_actions
from webapp.actions import users as actions
from webapp.api import Ctx, args, method
from webapp.params import ApiError
from webapp.slack.shapes import profile_shape, user_shape
from webapp.store import directory

# Slack's limit=0 means "everything"; we still page, at most this many per reply
MAX_PAGE = 1000


def _same_team(ctx: Ctx, team_id: str | None) -> None:
    """``team_id`` is for org-wide tokens; ours reach their own workspace only."""
    if team_id is not None and team_id != ctx.who.team_id:
        raise ApiError("team_access_not_granted")


@method("users.list", tier=2, cursor=args.Cursor("user"), limit=args.Int(0, 0, MAX_PAGE),
        include_locale=args.Flag(), team_id=args.Text(max_len=32))
async def list_(ctx: Ctx, cursor: str | None, limit: int, include_locale: bool,
                team_id: str | None) -> dict[str, Any]:
    _same_team(ctx, team_id)
    page = limit or MAX_PAGE
    rows = await directory.list_users(ctx.rt.db, ctx.who.team_id, cursor or "", page + 1)
    more = len(rows) > page
    rows = rows[:page]
    return {"members": [user_shape(r, locale=include_locale) for r in rows],
            "cache_ts": max((int(r["updated"]) for r in rows), default=0),
            "response_metadata": {
                "next_cursor": args.make_cursor("user", rows[-1]["id"]) if more else ""}}


@method("users.info", tier=4, user=args.user(), include_locale=args.Flag())
async def info(ctx: Ctx, user: str, include_locale: bool) -> dict[str, Any]:
    row = await actions.visible_user(ctx.rt, ctx.who, user)
    return {"user": user_shape(row, locale=include_locale)}


@method("users.lookupByEmail", tier=3,
        email=args.Text(missing="invalid_arguments", max_len=255, too_long="users_not_found"))
async def lookup_by_email(ctx: Ctx, email: str) -> dict[str, Any]:
    return {"user": user_shape(await actions.by_email(ctx.rt, ctx.who, email))}


@method("users.profile.get", tier=4, user=args.user(missing=None),
        include_labels=args.Flag())
async def profile_get(ctx: Ctx, user: str | None, include_labels: bool) -> dict[str, Any]:
    # include_labels names custom fields; there are none
    row = await actions.visible_user(ctx.rt, ctx.who, user or ctx.who.user_id)
    return {"profile": profile_shape(row)}


@method("users.profile.set", tier=3, user=args.user(missing=None),
        profile=args.Json(dict, error="invalid_profile"),
        name=args.Text(max_len=actions.MAX_FIELD_NAME, too_long="invalid_profile"),
        value=args.Custom(lambda v: v))
async def profile_set(ctx: Ctx, user: str | None, profile: dict[str, Any] | None,
                      name: str | None, value: Any) -> dict[str, Any]:
    """``profile`` (a JSON object), or one field as ``name`` and ``value``."""
    if profile is None:
        if name is None:
            raise ApiError("invalid_profile")
        profile = {name: value}
    row = await actions.set_profile(ctx.rt, ctx.who, user, profile)
    return {"profile": profile_shape(row)}


@method("users.prefs.get", tier=3)
async def prefs_get(ctx: Ctx) -> dict[str, Any]:
    return {"prefs": await actions.all_prefs(ctx.rt, ctx.who)}


@method("users.prefs.set", tier=3, prefs=args.Json(dict, error="invalid_prefs"),
        name=args.Text(max_len=100, too_long="invalid_name"), value=args.Custom(lambda v: v))
async def prefs_set(ctx: Ctx, prefs: dict[str, Any] | None, name: str | None,
                    value: Any) -> dict[str, Any]:
    """Slack's undocumented client method: ``name`` and ``value``, or ``prefs`` (an
    object of many)."""
    if prefs is None:
        if name is None:
            raise ApiError("invalid_name")
        prefs = {name: "" if value is None else value}
    changes = actions.check_prefs(prefs)
    return {"prefs": await actions.set_prefs(ctx.rt, ctx.who, changes)}


def _presence(value: Any) -> bool:
    """auto | away -> whether the user is manually away."""
    if value not in ("auto", "away"):
        raise ApiError("invalid_presence")
    return value == "away"


@method("users.setPresence", tier=2, presence=args.Custom(_presence))
async def set_presence(ctx: Ctx, presence: bool) -> dict[str, Any]:
    await actions.set_presence(ctx.rt, ctx.who, presence)
    return {}


@method("users.getPresence", tier=3, user=args.user(missing=None))
async def get_presence(ctx: Ctx, user: str | None) -> dict[str, Any]:
    rt, who = ctx.rt, ctx.who
    user = user or who.user_id
    manual_away = await directory.manual_away(rt.db, who.team_id, user)
    if manual_away is None:
        raise ApiError("user_not_found")
    state = await rt.presence(user)
    online = bool(state and state.get("online"))
    active = online and not manual_away
    reply: dict[str, Any] = {"presence": "active" if active else "away", "online": online,
                             "auto_away": False, "manual_away": manual_away,
                             "connection_count": int(state["connection_count"]) if state else 0}
    if state and state.get("last_activity"):
        reply["last_activity"] = int(state["last_activity"])
    return reply


@method("users.conversations", tier=3,
        cursor=args.Cursor("cid"),
        exclude_archived=args.Flag(),
        limit=args.Limit(100, 1, 1000),
        team_id=args.Text(max_len=32),
        types=args.Choices(("public_channel", "private_channel", "mpim", "im"),
                           ("public_channel",)),
        user=args.user(missing=None))
async def conversations(ctx: Ctx, cursor: str | None, exclude_archived: bool, limit: int,
                        team_id: str | None, types: tuple[str, ...], user: str | None
                        ) -> dict[str, Any]:
    """The conversations a user (the caller by default) is a member of. Of another user's,
    only those the caller may see: public channels, and the rest only where the caller is
    a member too."""
    _same_team(ctx, team_id)
    if user is not None and user != ctx.who.user_id:
        await actions.visible_user(ctx.rt, ctx.who, user)
    shapes, last = await channel_actions.list_conversations(
        ctx.rt, ctx.who, types, exclude_archived, cursor or "", limit,
        member=user or ctx.who.user_id)
    return {"channels": shapes, "response_metadata": {
        "next_cursor": args.make_cursor("cid", last) if last else ""}}
