"""chat.*"""

from __future__ import annotations

from typing import Any

from webapp.actions import messages
from webapp.api import Ctx, args, method
from webapp.params import ApiError


@method("chat.postMessage", tier="post",
         channel=args.channel(),
         text=args.Text(max_len=10 * messages.MAX_TEXT),
         thread_ts=args.Ts("thread_not_found", bare_seconds=False),
         client_msg_id=args.Text(max_len=64))
async def post_message(ctx: Ctx, channel: str, text: str | None, thread_ts: int | None,
                       client_msg_id: str | None) -> dict[str, Any]:
    if text is None:
        raise ApiError("no_text")
    if len(text) > messages.MAX_TEXT:
        raise ApiError("msg_too_long")
    return await messages.post(ctx.rt, ctx.who, channel, text, thread_ts, client_msg_id)
