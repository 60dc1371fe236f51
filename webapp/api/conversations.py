"""conversations.*"""

from __future__ import annotations

import asyncio
from typing import Any

from webapp import store
from webapp.actions import channels, dms, pins, reactions
from webapp.api import Ctx, args, method
from webapp.api.args import USER_ID_RE
from webapp.params import ApiError, encodable
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


@method("conversations.info", tier=3, channel=args.channel(),
        include_num_members=args.Flag(), include_locale=args.Flag())
async def info(ctx: Ctx, channel: str, include_num_members: bool, include_locale: bool
               ) -> dict[str, Any]:
    # include_locale is accepted; conversations carry no locale here, so none is added
    return {"channel": await channels.info(ctx.rt, ctx.who, channel, include_num_members)}


@method("conversations.list", tier=2,
        types=args.Choices(("public_channel", "private_channel", "mpim", "im"),
                           ("public_channel",)),
        exclude_archived=args.Flag(),
        limit=args.Limit(100, 1, 1000),
        cursor=args.Cursor("cid"),
        team_id=args.Text(max_len=32))
async def list_(ctx: Ctx, types: tuple[str, ...], exclude_archived: bool, limit: int,
                cursor: str | None, team_id: str | None) -> dict[str, Any]:
    # team_id picks a workspace of an org-wide app; a token here belongs to one workspace
    shapes, last = await channels.list_conversations(ctx.rt, ctx.who, types, exclude_archived,
                                                     cursor or "", limit)
    return {"channels": shapes, "response_metadata": {
        "next_cursor": args.make_cursor("cid", last) if last else ""}}


@method("conversations.members", tier=4, channel=args.channel(),
        limit=args.Limit(100, 1, 1000), cursor=args.Cursor("member"))
async def members(ctx: Ctx, channel: str, limit: int, cursor: str | None) -> dict[str, Any]:
    ids, last = await channels.members(ctx.rt, ctx.who, channel, cursor or "", limit)
    return {"members": ids, "response_metadata": {
        "next_cursor": args.make_cursor("member", last) if last else ""}}


@method("conversations.open", tier=3,
        channel=args.channel(missing=None),
        users=args.IdList(USER_ID_RE, "user_not_found", max_n=dms.MAX_OTHERS + 1,
                          too_many="too_many_users"),
        return_im=args.Flag(), prevent_creation=args.Flag())
async def open_(ctx: Ctx, channel: str | None, users: list[str] | None, return_im: bool,
                prevent_creation: bool) -> dict[str, Any]:
    if channel is not None:
        row, already = await dms.open_by_channel(ctx.rt, ctx.who, channel)
    elif users:
        row, already = await dms.open_by_users(ctx.rt, ctx.who, users, prevent_creation)
    elif users is not None or "users" in ctx.raw:  # given, but no user in it
        raise ApiError("not_enough_users")
    else:
        raise ApiError("users_list_not_supplied")
    if row is None:  # prevent_creation, and there is none yet
        return {"no_op": True, "channel": {}}
    shape = await channels.info(ctx.rt, ctx.who, row["id"], False) if return_im \
        else {"id": row["id"]}
    return {"no_op": True, "already_open": True, "channel": shape} if already \
        else {"channel": shape}


@method("conversations.close", tier=2, channel=args.channel())
async def close(ctx: Ctx, channel: str) -> dict[str, Any]:
    if not await dms.close(ctx.rt, ctx.who, channel):
        return {"no_op": True, "already_closed": True}
    return {}


@method("conversations.invite", tier=3, channel=args.channel(),
        users=args.IdList(USER_ID_RE, "user_not_found", missing="no_user", min_n=1,
                          max_n=1000))
async def invite(ctx: Ctx, channel: str, users: list[str]) -> dict[str, Any]:
    row = await channels.invite(ctx.rt, ctx.who, channel, users)
    return {"channel": await channels.info(ctx.rt, ctx.who, row["id"], True)}


@method("conversations.kick", tier=3, channel=args.channel(), user=args.user())
async def kick(ctx: Ctx, channel: str, user: str) -> dict[str, Any]:
    await channels.kick(ctx.rt, ctx.who, channel, user)
    return {}


@method("conversations.leave", tier=3, channel=args.channel())
async def leave(ctx: Ctx, channel: str) -> dict[str, Any]:
    was_member = await channels.leave(ctx.rt, ctx.who, channel)
    return {} if was_member else {"not_in_channel": True}


@method("conversations.archive", tier=2, channel=args.channel())
async def archive(ctx: Ctx, channel: str) -> dict[str, Any]:
    await channels.set_archived(ctx.rt, ctx.who, channel, True)
    return {}


@method("conversations.unarchive", tier=2, channel=args.channel())
async def unarchive(ctx: Ctx, channel: str) -> dict[str, Any]:
    await channels.set_archived(ctx.rt, ctx.who, channel, False)
    return {}


@method("conversations.rename", tier=2, channel=args.channel(),
        name=args.Text(max_len=100_000))
async def rename(ctx: Ctx, channel: str, name: str | None) -> dict[str, Any]:
    row = await channels.rename(ctx.rt, ctx.who, channel, name)
    return {"channel": await channels.info(ctx.rt, ctx.who, row["id"], False)}


def _topic_text(value: Any) -> str:
    """Required, but may be empty: an empty topic or purpose clears it."""
    if value is None:
        raise ApiError("invalid_arguments")
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not encodable(value) or len(value) > 100_000:
        raise ApiError("invalid_arguments")
    return value


@method("conversations.setTopic", tier=2, channel=args.channel(),
        topic=args.Custom(_topic_text))
async def set_topic(ctx: Ctx, channel: str, topic: str) -> dict[str, Any]:
    row = await channels.set_text(ctx.rt, ctx.who, channel, "topic", topic)
    # the channel, as Slack answers today; "topic" as it answered before, for older clients
    return {"channel": await channels.info(ctx.rt, ctx.who, row["id"], False),
            "topic": topic}


@method("conversations.setPurpose", tier=2, channel=args.channel(),
        purpose=args.Custom(_topic_text))
async def set_purpose(ctx: Ctx, channel: str, purpose: str) -> dict[str, Any]:
    row = await channels.set_text(ctx.rt, ctx.who, channel, "purpose", purpose)
    return {"channel": await channels.info(ctx.rt, ctx.who, row["id"], False),
            "purpose": purpose}


@method("conversations.mark", tier=3, channel=args.channel(),
        ts=args.Ts("invalid_timestamp", missing="invalid_timestamp"))
async def mark(ctx: Ctx, channel: str, ts: int) -> dict[str, Any]:
    await channels.mark(ctx.rt, ctx.who, channel, ts)
    return {}


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
    # reactions and pins of the whole page in one query, the pin count in another
    messages, pin_count = await asyncio.gather(
        reactions.annotate(ctx.rt, row["id"], [row_to_message(r, row["team_id"]) for r in rows]),
        pins.count(ctx.rt, row["id"]))
    return {"messages": messages,
            "has_more": has_more, "pin_count": pin_count, "channel_actions_ts": None,
            "channel_actions_count": 0, "response_metadata": {"next_cursor": next_cursor}}



# --- conversations.replies (threads live with the chat.* actions) --------------------------


@method("conversations.replies", tier=3,
        channel=args.channel(),
        ts=args.Ts("thread_not_found", missing="thread_not_found", bare_seconds=False),
        limit=args.Int(1000, 1, 1000),
        inclusive=args.Flag(),
        latest=args.Ts("invalid_ts_latest"),
        oldest=args.Ts("invalid_ts_oldest"),
        cursor=args.Cursor("next_reply"))
async def replies(ctx: Ctx, channel: str, ts: int, limit: int, inclusive: bool,
                  latest: int | None, oldest: int | None, cursor: str | None) -> dict[str, Any]:
    """A thread: its parent first (first page only), then replies oldest first."""
    from webapp.actions import messages as thread_actions

    if cursor is not None and not cursor.isdigit():
        raise ApiError("invalid_cursor")
    window = thread_actions.Window(limit, int(cursor) if cursor else None, oldest, latest,
                                   inclusive)
    page = await thread_actions.replies(ctx.rt, ctx.who, channel, ts, window)
    last = page.pop("last")
    next_cursor = args.make_cursor("next_reply", last) if page["has_more"] else ""
    return {**page, "response_metadata": {"next_cursor": next_cursor}}
