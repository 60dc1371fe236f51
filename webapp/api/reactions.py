"""reactions.*: messages only. Files and file comments, whose reactions Slack retired, are
not items here: without ``channel`` and ``timestamp`` a call names no item."""

from __future__ import annotations

from typing import Any

from webapp.actions import reactions
from webapp.api import Ctx, args, method

# the message a call names; Slack answers no_item_specified when either is absent
_CHANNEL = args.channel(missing="no_item_specified")
_TIMESTAMP = args.Ts("bad_timestamp", missing="no_item_specified", bare_seconds=False)
_NAME = args.Custom(reactions.emoji_name)


@method("reactions.add", tier=3, channel=_CHANNEL, timestamp=_TIMESTAMP, name=_NAME)
async def add(ctx: Ctx, channel: str, timestamp: int, name: str) -> dict[str, Any]:
    await reactions.add(ctx.rt, ctx.who, channel, timestamp, name)
    return {}


@method("reactions.remove", tier=2, channel=_CHANNEL, timestamp=_TIMESTAMP, name=_NAME)
async def remove(ctx: Ctx, channel: str, timestamp: int, name: str) -> dict[str, Any]:
    await reactions.remove(ctx.rt, ctx.who, channel, timestamp, name)
    return {}


@method("reactions.get", tier=3, channel=_CHANNEL, timestamp=_TIMESTAMP, full=args.Flag())
async def get(ctx: Ctx, channel: str, timestamp: int, full: bool) -> dict[str, Any]:
    return await reactions.get(ctx.rt, ctx.who, channel, timestamp, full)


@method("reactions.list", tier=2,
        user=args.user(missing=None),
        full=args.Flag(),
        count=args.Int(100, 1, 1000),
        page=args.Int(1, 1, 100),
        cursor=args.Cursor(reactions.CURSOR),
        limit=args.Int(0, 0, 1000),
        team_id=args.Text(max_len=32))
async def list_(ctx: Ctx, user: str | None, full: bool, count: int, page: int,
                cursor: str | None, limit: int, team_id: str | None) -> dict[str, Any]:
    # Slack pages by count/page or by cursor/limit; ``limit`` (when given) sizes either.
    # team_id picks a workspace of an org-wide app; a token here belongs to one workspace
    reactor = await reactions.reactor(ctx.rt, ctx.who, user)
    return await reactions.list_reacted(ctx.rt, ctx.who, reactor, full, limit or count, page,
                                        cursor)
