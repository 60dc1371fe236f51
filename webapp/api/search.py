"""search.*: search.messages (webapp/actions/search.py has the query language).

User tokens only, as in Slack: a bot token gets not_allowed_token_type."""

from __future__ import annotations

import math
from typing import Any

from webapp.actions import search
from webapp.api import Ctx, args, method
from webapp.params import ApiError

_CURSOR = args.Cursor("search")


def _sort(value: Any) -> str:
    if value in (None, ""):
        return "score"
    if value not in ("score", "timestamp"):
        raise ApiError("invalid_arguments")
    return str(value)


def _sort_dir(value: Any) -> str:
    if value in (None, ""):
        return "desc"
    if value not in ("asc", "desc"):
        raise ApiError("invalid_arguments")
    return str(value)


def _cursor(value: Any) -> int | None:
    """Slack's cursormark paging: "*" starts; our next_cursor holds the offset reached."""
    if value in (None, ""):
        return None
    if value == "*":
        return 0
    offset = _CURSOR.parse({"cursor": value}, "cursor")
    if offset is None or not offset.isdigit() or int(offset) >= MAX_RESULTS:
        raise ApiError("invalid_cursor")
    return int(offset)


MAX_RESULTS = search.MAX_COUNT * search.MAX_PAGE


@method("search.messages", tier=2,
        query=args.Text(max_len=1000),
        sort=args.Custom(_sort), sort_dir=args.Custom(_sort_dir),
        count=args.Int(20, 1, search.MAX_COUNT),
        page=args.Int(1, 1, search.MAX_PAGE),
        cursor=args.Custom(_cursor),
        highlight=args.Flag(),
        team_id=args.Text(max_len=32))
async def messages(ctx: Ctx, query: str | None, sort: str, sort_dir: str, count: int,
                   page: int, cursor: int | None, highlight: bool,
                   team_id: str | None) -> dict[str, Any]:
    # the token type is Slack's first check; the query is checked after it (in the action)
    offset = cursor if cursor is not None else (page - 1) * count
    total, matches = await search.search(ctx.rt, ctx.who, search.Request(
        query or "", sort == "score", sort_dir == "asc", offset, count, highlight))
    pages = math.ceil(total / count) if total else 0
    current = offset // count + 1
    reply: dict[str, Any] = {"query": query, "messages": {
        "total": total,
        "pagination": {"total_count": total, "page": current, "per_page": count,
                       "page_count": pages, "first": min(offset + 1, total),
                       "last": min(offset + count, total)},
        "paging": {"count": count, "total": total, "page": current, "pages": pages},
        "matches": matches}}
    if cursor is not None:
        more = offset + count < min(total, MAX_RESULTS)
        reply["response_metadata"] = {
            "next_cursor": args.make_cursor("search", offset + count) if more else ""}
    return reply
