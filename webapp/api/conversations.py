"""conversations.*"""

from __future__ import annotations

from typing import Any

from webapp import store
from webapp.actions import channels
from webapp.api import Ctx, args, method
from webapp.params import ApiError
from webapp.slack.shapes import channel_shape, row_to_message


@method("conversations.create", tier=2,
        name=args.Text(max_len=100_000), is_private=args.Flag())
async def create(ctx: Ctx, name: str | None, is_private: bool) -> dict[str, Any]:
    row = await channels.create(ctx.rt, ctx.who, channels.check_name(name), is_private)
    return {"channel": channel_shape(row, is_member=True)}


@method("conversations.join", tier=3, channel=args.channel())
async def join(ctx: Ctx, channel: str) -> dict[str, Any]:
    row, already = await channels.join(ctx.rt, ctx.who, channel)
    reply: dict[str, Any] = {"channel": channel_shape(row, is_member=True)}
    if already:
        reply["warning"] = "already_in_channel"
        reply["response_metadata"] = {"warnings": ["already_in_channel"]}
    return reply


@method("conversations.info", tier=3, channel=args.channel())
async def info(ctx: Ctx, channel: str) -> dict[str, Any]:
    row = await channels.visible_channel(ctx.rt, ctx.who, channel)
    member = await store.is_member(ctx.rt.db, row["id"], ctx.who.user_id)
    return {"channel": channel_shape(row, is_member=member)}


@method("conversations.history", tier=3,
        channel=args.channel(),
        limit=args.Int(100, 1, 999),
        inclusive=args.Flag(),
        latest=args.Ts("invalid_ts_latest"),
        oldest=args.Ts("invalid_ts_oldest"),
        cursor=args.Cursor("next_ts"))
async def history(ctx: Ctx, channel: str, limit: int, inclusive: bool, latest: int | None,
                  oldest: int | None, cursor: str | None) -> dict[str, Any]:
    row = await channels.visible_channel(ctx.rt, ctx.who, channel)
    latest_inclusive = inclusive
    if cursor is not None:
        if not cursor.isdigit():
            raise ApiError("invalid_cursor")
        latest, latest_inclusive = int(cursor), False
    rows = await store.history(ctx.rt.db, row["id"], latest_us=latest, oldest_us=oldest or 0,
                               latest_inclusive=latest_inclusive, oldest_inclusive=inclusive,
                               limit=limit)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = args.make_cursor("next_ts", rows[-1]["ts_us"]) if has_more else ""
    return {"messages": [row_to_message(r, row["team_id"]) for r in rows],
            "has_more": has_more, "pin_count": 0, "channel_actions_ts": None,
            "channel_actions_count": 0, "response_metadata": {"next_cursor": next_cursor}}

