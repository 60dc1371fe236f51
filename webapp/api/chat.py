"""chat.*

Slack's formatting and authorship arguments (mrkdwn, parse, link_names, unfurl_links,
unfurl_media, username, icon_emoji, icon_url, as_user) are accepted and ignored: messages are
stored and echoed as given, and always posted as the caller.
"""

from __future__ import annotations

import re
from typing import Any

from webapp.actions import messages, scheduled
from webapp.actions.messages import Content, Draft
from webapp.api import Ctx, args, method
from webapp.params import ApiError

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


# --- scheduled messages ----------------------------------------------------------------------

_SCHEDULED_ID = re.compile(r"^Q[A-Z0-9]{2,20}$")


@method("chat.scheduleMessage", tier=3,
        channel=args.ChannelRef(),
        post_at=args.Seconds("invalid_time", missing="invalid_time"),
        text=_TEXT, blocks=_BLOCKS, attachments=_ATTACHMENTS,
        thread_ts=_THREAD,
        reply_broadcast=args.Flag(),
        metadata=args.Json(dict, error="invalid_metadata_format"))
async def schedule_message(ctx: Ctx, channel: str, post_at: int, text: str | None,
                           blocks: list[Any] | None, attachments: list[Any] | None,
                           thread_ts: int | None, reply_broadcast: bool,
                           metadata: dict[str, Any] | None) -> dict[str, Any]:
    draft = Draft(messages.content(text, blocks, attachments), thread_ts,
                  reply_broadcast and thread_ts is not None)
    return await scheduled.schedule(ctx.rt, ctx.who, scheduled.Schedule(channel, draft, post_at))


@method("chat.scheduledMessages.list", tier=3,
        channel=args.Pattern(args.CHANNEL_ID_RE, "invalid_channel"),
        cursor=args.Cursor("sched"),
        latest=args.Seconds("invalid_arguments"),
        oldest=args.Seconds("invalid_arguments"),
        limit=args.Int(100, 1, 1000),
        team_id=args.Text(max_len=32))
async def scheduled_list(ctx: Ctx, channel: str | None, cursor: str | None,
                         latest: int | None, oldest: int | None, limit: int,
                         team_id: str | None) -> dict[str, Any]:
    # team_id picks a workspace of an org-wide token; ours reach their own workspace only
    page = scheduled.Page(limit, _after(cursor), oldest, latest)
    shapes, last = await scheduled.list_(ctx.rt, ctx.who, channel, page)
    return {"scheduled_messages": shapes, "response_metadata": {
        "next_cursor": args.make_cursor("sched", f"{last[0]}:{last[1]}") if last else ""}}


def _after(cursor: str | None) -> tuple[int, str] | None:
    """A cursor's position: "<post_at>:<id>" of the last message listed."""
    if cursor is None:
        return None
    post_at, _, last_id = cursor.partition(":")
    if not post_at.isdigit() or len(post_at) > 12 or not _SCHEDULED_ID.match(last_id):
        raise ApiError("invalid_cursor")
    return int(post_at), last_id


@method("chat.deleteScheduledMessage", tier=3,
        channel=args.channel(),
        scheduled_message_id=args.Pattern(_SCHEDULED_ID, "invalid_scheduled_message_id",
                                          missing="invalid_scheduled_message_id",
                                          wrong_type="invalid_scheduled_message_id"))
async def delete_scheduled_message(ctx: Ctx, channel: str,
                                   scheduled_message_id: str) -> dict[str, Any]:
    await scheduled.delete(ctx.rt, ctx.who, channel, scheduled_message_id)
    return {}
