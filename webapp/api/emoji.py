"""emoji.*"""

from __future__ import annotations

from typing import Any

from cluster import ids
from webapp.api import Ctx, args, method
from webapp.store import directory


@method("emoji.list", tier=2, include_categories=args.Flag())
async def list_(ctx: Ctx, include_categories: bool) -> dict[str, Any]:
    """The workspace's custom emoji (an empty map when it has none). Unicode categories
    (``include_categories``) are not served: the flag is accepted and adds nothing."""
    emoji, changed = await directory.list_emoji(ctx.rt.db, ctx.who.team_id)
    return {"emoji": emoji, "cache_ts": ids.format_ts(changed * 1_000_000)}
