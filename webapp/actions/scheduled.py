"""Scheduled messages: chat.scheduleMessage, chat.scheduledMessages.list,
chat.deleteScheduledMessage, and the posting of due messages (webapp/scheduler.py runs it).

A message is checked as chat.postMessage checks it when it is scheduled, and again when it
is posted: it posts as the user who scheduled it, through the same action as
chat.postMessage. If that user may no longer post there (left, archived, deactivated, the
thread is gone), the message is dropped, as Slack drops it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any

from cluster import ids
from webapp import store
from webapp.actions import channels, messages
from webapp.actions.messages import Content, Draft
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack.shapes import delayed_message_shape, scheduled_message_shape
from webapp.store import directory
from webapp.store import messages as store_messages
from webapp.store import scheduled as db_scheduled

log = logging.getLogger(__name__)

# Slack's limits: post_at at most 120 days ahead; at most 30 messages for one channel
# within 5 minutes
MAX_AHEAD_S = 120 * 86400
WINDOW_S = 300
MAX_IN_WINDOW = 30
# due rows claimed per shard and round; a round claims again until a batch comes back short
CLAIM_BATCH = 50


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A message to schedule: where (as the caller named it), what, and when."""

    channel: str
    draft: Draft
    post_at: int


async def schedule(rt: Runtime, who: store.Identity, req: Schedule) -> dict[str, Any]:
    """chat.scheduleMessage: the time first (a refused call must not open a DM), then the
    checks chat.postMessage makes, then the row."""
    now = int(time.time())
    if req.post_at < now:
        raise ApiError("time_in_past")
    if req.post_at > now + MAX_AHEAD_S:
        raise ApiError("time_too_far")
    channel = await messages.target(rt, who, req.channel)
    await _may_post(rt, who, channel)
    thread_us = await _thread(rt, channel, req.draft.thread_us)
    body = req.draft.content
    row = {"id": ids.new_id("Q"), "channel_id": channel, "user_id": who.user_id,
           "post_at": req.post_at, "date_created": now, "text": body.text,
           **body.columns(), "thread_ts_us": thread_us,
           "reply_broadcast": int(req.draft.broadcast and thread_us is not None)}
    if not await db_scheduled.schedule(rt.db, row, WINDOW_S, MAX_IN_WINDOW):
        raise ApiError("restricted_too_many")
    return {"channel": channel, "scheduled_message_id": row["id"], "post_at": req.post_at,
            "message": delayed_message_shape(row, who.team_id, who.bot_id)}


async def _may_post(rt: Runtime, who: store.Identity, channel: str) -> None:
    """chat.postMessage's checks, in its order: visible, not archived, a member."""
    row = await channels.visible_channel(rt, who, channel)
    if row["is_archived"]:
        raise ApiError("is_archived")
    if not await store.is_member(rt.db, channel, who.user_id):
        raise ApiError("not_in_channel")


async def _thread(rt: Runtime, channel: str, thread_us: int | None) -> int | None:
    """The thread a reply will go under: its parent's ts (a reply's ts names its parent's
    thread, as in a post)."""
    if thread_us is None:
        return None
    parent = await store_messages.get_message(rt.db, channel, thread_us)
    if parent is None:
        raise ApiError("thread_not_found")
    return int(parent["thread_ts_us"] or thread_us)


@dataclasses.dataclass(frozen=True)
class Page:
    """Which scheduled messages to list: after the cursor, post_at within [oldest, latest]."""

    limit: int
    after: tuple[int, str] | None = None
    oldest: int | None = None
    latest: int | None = None


async def list_(rt: Runtime, who: store.Identity, channel: str | None, page: Page
                ) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """The caller's own pending messages (in one channel, or all), by post_at; and the
    position to continue after (None at the end)."""
    if channel is not None:
        try:
            await channels.visible_channel(rt, who, channel)
        except ApiError as exc:
            raise ApiError("invalid_channel") from exc
    rows = await db_scheduled.list_for_user(rt.db, who.user_id, channel, after=page.after,
                                            oldest=page.oldest, latest=page.latest,
                                            limit=page.limit)
    shown = rows[:page.limit]
    more = len(rows) > page.limit
    last = (int(shown[-1]["post_at"]), shown[-1]["id"]) if more else None
    return [scheduled_message_shape(r) for r in shown], last


async def delete(rt: Runtime, who: store.Identity, channel: str, scheduled_id: str) -> None:
    """chat.deleteScheduledMessage: the caller's own, in that channel, not yet posting."""
    await channels.visible_channel(rt, who, channel)
    if not await db_scheduled.delete_unclaimed(rt.db, channel, who.user_id, scheduled_id,
                                               ids.now_us()):
        raise ApiError("invalid_scheduled_message_id")


# --- posting what is due -------------------------------------------------------------------


async def post_due(rt: Runtime) -> int:
    """Claim and post every due message on every shard; how many were handled."""
    lease_us = messages.pending_lease_s(rt) * 1_000_000
    done = await asyncio.gather(*(_post_shard(rt, s, lease_us) for s in rt.db.shards()))
    return sum(done)


async def _post_shard(rt: Runtime, shard: str, lease_us: int) -> int:
    handled = 0
    while True:
        rows = await db_scheduled.claim_due(rt.db, shard, int(time.time()), ids.now_us(),
                                            lease_us, CLAIM_BATCH)
        for row in rows:
            await _post_one(rt, row)
        handled += len(rows)
        if len(rows) < CLAIM_BATCH:
            return handled


async def _post_one(rt: Runtime, row: dict[str, Any]) -> None:
    """Post a claimed row, then delete it. The row's id is the post's client_msg_id: a
    retry after a crash between the two finds the committed message instead of posting it
    again. A row that fails for a transient reason stays claimed, and is tried again once
    the claim runs out; the other rows go on."""
    try:
        error = await _post(rt, row)
        if error is not None:
            log.info("scheduled message dropped id=%s: %s", row["id"], error)
        await db_scheduled.delete(rt.db, row["channel_id"], row["id"])
    except Exception as exc:  # noqa: BLE001 - the claim's end brings a retry
        log.warning("scheduled message post failed id=%s: %s", row["id"], type(exc).__name__)


async def _post(rt: Runtime, row: dict[str, Any]) -> str | None:
    """Post as the author; why it may not (Slack drops such a message), else None."""
    who = await directory.identity_for_user(rt.db, row["user_id"])
    if who is None:
        return "user_deactivated"
    draft = Draft(Content(row["text"], _json(row["blocks"]), _json(row["attachments"])),
                  row["thread_ts_us"], bool(row["reply_broadcast"]))
    try:
        await messages.post(rt, who, row["channel_id"], draft, row["id"])
    except ApiError as exc:
        if exc.status == 429:  # fanout behind (pushback): posted once the claim runs out
            raise
        return exc.error
    return None


def _json(value: str | None) -> list[Any] | None:
    return json.loads(value) if value else None
