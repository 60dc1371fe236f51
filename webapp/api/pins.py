"""pins.*: messages only (Slack retired pinning files and file comments)."""

from __future__ import annotations

from typing import Any

from webapp.actions import pins
from webapp.api import Ctx, args, method

_TIMESTAMP = args.Ts("bad_timestamp", missing="no_item_specified", bare_seconds=False)


@method("pins.add", tier=2, channel=args.channel(), timestamp=_TIMESTAMP)
async def add(ctx: Ctx, channel: str, timestamp: int) -> dict[str, Any]:
    await pins.add(ctx.rt, ctx.who, channel, timestamp)
    return {}


@method("pins.remove", tier=2, channel=args.channel(), timestamp=_TIMESTAMP)
async def remove(ctx: Ctx, channel: str, timestamp: int) -> dict[str, Any]:
    await pins.remove(ctx.rt, ctx.who, channel, timestamp)
    return {}


@method("pins.list", tier=2, channel=args.channel())
async def list_(ctx: Ctx, channel: str) -> dict[str, Any]:
    return {"items": await pins.list_(ctx.rt, ctx.who, channel)}
