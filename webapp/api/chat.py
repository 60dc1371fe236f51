"""chat.*

Slack's formatting and authorship arguments (mrkdwn, parse, link_names, unfurl_links,
unfurl_media, username, icon_emoji, icon_url, as_user) are accepted and ignored: messages are
stored and echoed as given, and always posted as the caller.
"""

from __future__ import annotations

from typing import Any

from webapp.actions import messages
from webapp.actions.messages import Content, Draft
from webapp.api import Ctx, args, method

# the typed arguments every posting method shares
_TEXT = args.Text(max_len=10 * messages.MAX_TEXT)
_BLOCKS = args.Json(list, error="invalid_blocks", max_bytes=messages.MAX_RICH_BYTES)
_ATTACHMENTS = args.Json(list, error="invalid_attachments", max_bytes=messages.MAX_RICH_BYTES)
_THREAD = args.Ts("thread_not_found", bare_seconds=False)


@method("chat.postMessage", tier="post",
        channel=args.ChannelRef(),
        text=_TEXT, blocks=_BLOCKS, attachments=_ATTACHMENTS,
        thread_ts=_THREAD,
        reply_broadcast=args.Flag(),
        client_msg_id=args.Text(max_len=64),
        metadata=args.Json(dict, error="invalid_metadata_format"))
async def post_message(ctx: Ctx, channel: str, text: str | None, blocks: list[Any] | None,
                       attachments: list[Any] | None, thread_ts: int | None,
                       reply_broadcast: bool, client_msg_id: str | None,
                       metadata: dict[str, Any] | None) -> dict[str, Any]:
    # reply_broadcast means something only in a thread, as in Slack
    draft = Draft(messages.content(text, blocks, attachments), thread_ts,
                  reply_broadcast and thread_ts is not None)
    return await messages.post(ctx.rt, ctx.who, channel, draft, client_msg_id)


@method("chat.meMessage", tier="post", channel=args.ChannelRef(), text=_TEXT)
async def me_message(ctx: Ctx, channel: str, text: str | None) -> dict[str, Any]:
    draft = Draft(messages.content(text, None, None), subtype="me_message")
    reply = await messages.post(ctx.rt, ctx.who, channel, draft, None)
    return {"channel": reply["channel"], "ts": reply["ts"]}


@method("chat.postEphemeral", tier="post",
        channel=args.ChannelRef(),
        user=args.user(missing="user_not_in_channel", error="user_not_in_channel"),
        text=_TEXT, blocks=_BLOCKS, attachments=_ATTACHMENTS,
        thread_ts=_THREAD)
async def post_ephemeral(ctx: Ctx, channel: str, user: str, text: str | None,
                         blocks: list[Any] | None, attachments: list[Any] | None,
                         thread_ts: int | None) -> dict[str, Any]:
    body: Content = messages.content(text, blocks, attachments)
    return await messages.post_ephemeral(ctx.rt, ctx.who, channel, user, body, thread_ts)


@method("chat.update", tier=3,
        channel=args.channel(),
        ts=args.Ts("message_not_found", missing="message_not_found", bare_seconds=False),
        text=_TEXT, blocks=_BLOCKS, attachments=_ATTACHMENTS)
async def update(ctx: Ctx, channel: str, ts: int, text: str | None, blocks: list[Any] | None,
                 attachments: list[Any] | None) -> dict[str, Any]:
    return await messages.update(ctx.rt, ctx.who, channel, ts, text, blocks, attachments)


@method("chat.delete", tier=3,
        channel=args.channel(),
        ts=args.Ts("message_not_found", missing="message_not_found", bare_seconds=False))
async def delete(ctx: Ctx, channel: str, ts: int) -> dict[str, Any]:
    return await messages.delete(ctx.rt, ctx.who, channel, ts)


@method("chat.getPermalink", tier=4,
        channel=args.channel(),
        message_ts=args.Ts("message_not_found", missing="message_not_found",
                           bare_seconds=False))
async def get_permalink(ctx: Ctx, channel: str, message_ts: int) -> dict[str, Any]:
    return await messages.permalink(ctx.rt, ctx.who, channel, message_ts)
