"""Messages: what may be posted where, and by whom changed; ``client_msg_id`` idempotency;
threads, permalinks and ephemeral messages."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from typing import Any

from cluster import ids
from webapp import adminlink, store
from webapp.actions import channels
from webapp.actions.reactions import annotate
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack import events
from webapp.slack.shapes import message_shape, row_to_message
from webapp.store import messages as store_messages

MAX_TEXT = 40_000
# Block Kit's limits: 50 blocks per message, a block_id of at most 255 characters; Slack
# takes at most 100 attachments
MAX_BLOCKS = 50
MAX_BLOCK_ID = 255
MAX_ATTACHMENTS = 100
# blocks or attachments of one message, as JSON
MAX_RICH_BYTES = 128 * 1024
# client_msg_id idempotency (see _post_once). A retry that finds its id "pending" waits this
# long for the attempt in flight to answer (a post takes milliseconds) before it asks the
# database, which decides either way: a claim left by a killed process costs a retry no more.
_IDEM_WAIT_S = 0.5
_IDEM_POLL_S = 0.05
_PENDING = b"pending"
# a claim outlives the longest request that can hold it by this much (scheduling, GC pauses)
_PENDING_MARGIN_S = 2.0


@dataclasses.dataclass(frozen=True)
class Content:
    """What a message says: text, and Block Kit blocks and attachments (None: not given)."""

    text: str
    blocks: list[Any] | None = None
    attachments: list[Any] | None = None

    def columns(self) -> dict[str, Any]:
        """As row_to_message reads them (JSON text)."""
        return {"blocks": json.dumps(self.blocks) if self.blocks else None,
                "attachments": json.dumps(self.attachments) if self.attachments else None}


def content(text: str | None, blocks: list[Any] | None,
            attachments: list[Any] | None) -> Content:
    """Check a message's content as Slack does: blocks and attachments count as content, so
    text may then be empty; with none of the three: no_text."""
    if blocks is not None:
        _check_blocks(blocks)
    if attachments is not None:
        _check_attachments(attachments)
    if not text and not blocks and not attachments:
        raise ApiError("no_text")
    if text is not None and len(text) > MAX_TEXT:
        raise ApiError("msg_too_long")
    return Content(text or "", blocks, attachments)


def _check_blocks(blocks: list[Any]) -> None:
    if len(blocks) > MAX_BLOCKS or len(json.dumps(blocks)) > MAX_RICH_BYTES:
        raise ApiError("invalid_blocks")
    for block in blocks:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str) \
                or not block["type"]:
            raise ApiError("invalid_blocks")
        block_id = block.get("block_id")
        if block_id is not None and (not isinstance(block_id, str)
                                     or not 0 < len(block_id) <= MAX_BLOCK_ID):
            raise ApiError("invalid_blocks")


def _check_attachments(attachments: list[Any]) -> None:
    if len(attachments) > MAX_ATTACHMENTS:
        raise ApiError("too_many_attachments")
    if len(json.dumps(attachments)) > MAX_RICH_BYTES \
            or not all(isinstance(a, dict) for a in attachments):
        raise ApiError("invalid_attachments")


async def target(rt: Runtime, who: store.Identity, ref: str) -> str:
    """The conversation a ``channel`` argument names: an id as given, a channel name
    (``general`` or ``#general``), or a user id (the DM with that user, opened if need be)."""
    return await channels.resolve_target(rt, who, ref)


def _refused(exc: store.PostRefused) -> ApiError:
    return ApiError(exc.error)


# --- posting -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Draft:
    """A message to post: its content, thread and kind."""

    content: Content
    thread_us: int | None = None
    broadcast: bool = False
    subtype: str | None = None


async def post(rt: Runtime, who: store.Identity, channel: str, draft: Draft,
               cmid: str | None) -> dict[str, Any]:
    """Post as ``who`` to the conversation ``channel`` names; the reply body of
    chat.postMessage (chat.meMessage and RTM sends answer from it)."""
    channel = await target(rt, who, channel)
    rt.pushback.check(channel)  # fanout behind: ratelimited before anything is written
    if cmid is None:
        return await _post(rt, who, channel, draft, None)
    return await _post_once(rt, who, channel, draft, cmid)


async def _post(rt: Runtime, who: store.Identity, channel: str, draft: Draft,
                cmid: str | None) -> dict[str, Any]:
    try:
        _, message = await store.post_message(
            rt.db, channel, who, draft.content.text, draft.thread_us, cmid,
            subtype=draft.subtype, blocks=draft.content.blocks,
            attachments=draft.content.attachments, broadcast=draft.broadcast)
    except store.PostRefused as exc:
        raise _refused(exc) from exc
    # an earlier attempt with this client_msg_id may have committed the message and its
    # event (posted is None): if it died before notifying, a channel server's head check
    # delivers the event
    return {"channel": channel, "ts": message["ts"], "message": message}


def pending_lease_s(rt: Runtime) -> int:
    """How long a "pending" claim stands: the longest a post can run once it holds one
    (every transaction attempt waiting out InnoDB's lock wait timeout, then the whole notify
    deadline) plus a margin. By then a live attempt has answered and a dead one's claim is
    gone; nothing is stuck "pending" for the reply cache's 24 h."""
    retry = rt.db.retry
    transaction_s = retry.attempts * (rt.db.lock_wait_timeout_s + retry.cap_s)
    return math.ceil(transaction_s + rt.settings.notify_deadline_s + _PENDING_MARGIN_S)


async def _post_once(rt: Runtime, who: store.Identity, channel: str, draft: Draft,
                     cmid: str) -> dict[str, Any]:
    """client_msg_id idempotency: a retried post returns the first post's reply.

    Redis is the fast path: the reply cached for 24 h, and a short "pending" claim while an
    attempt is in flight. The database makes it exact: post_message returns the message an
    earlier attempt committed with this id, so a retry after the webapp died mid-post, or
    after Redis lost the key, still answers ok with exactly one message stored."""
    key = rt.key("idem", who.user_id, cmid)
    claimed, reply = await _claim(rt, key)
    if reply is not None:
        return reply
    try:
        reply = await _post(rt, who, channel, draft, cmid)
    except BaseException:
        if claimed:
            await rt.redis.delete(key)
        raise
    await rt.redis.set(key, adminlink.dumps(reply), ex=rt.settings.idempotency_ttl_s)
    return reply


async def _claim(rt: Runtime, key: str) -> tuple[bool, dict[str, Any] | None]:
    """Mark an attempt in flight, or wait briefly for the one that is: (True, None) when
    claimed, (False, its reply) once it answered, (False, None) when it did not answer in
    _IDEM_WAIT_S (slow, or died with its process): the caller then posts unclaimed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _IDEM_WAIT_S
    lease = pending_lease_s(rt)
    while True:
        if await rt.redis.set(key, _PENDING, nx=True, ex=lease):
            return True, None
        held = await rt.redis.get(key)
        if held is not None and held != _PENDING:
            return False, json.loads(held)
        if loop.time() >= deadline:
            return False, None
        await asyncio.sleep(_IDEM_POLL_S)


# --- edits and deletes ---------------------------------------------------------------------


async def update(rt: Runtime, who: store.Identity, channel: str, ts_us: int,
                 text: str | None, blocks: list[Any] | None,
                 attachments: list[Any] | None) -> dict[str, Any]:
    """chat.update: the author, or a workspace admin. Parts not given stay as they were."""
    content(text, blocks, attachments)  # the same checks as a post: no_text, invalid_*
    try:
        message = await store_messages.update_message(rt.db, channel, who, ts_us, text or None,
                                                      blocks, attachments)
    except store.PostRefused as exc:
        raise _refused(exc) from exc
    await annotate(rt, channel, [message])  # an edit keeps its reactions and pins
    return {"channel": channel, "ts": message["ts"], "text": message["text"],
            "message": message}


async def delete(rt: Runtime, who: store.Identity, channel: str, ts_us: int) -> dict[str, Any]:
    """chat.delete: the author, or a workspace admin."""
    try:
        await store_messages.delete_message(rt.db, channel, who, ts_us)
    except store.PostRefused as exc:
        raise _refused(exc) from exc
    return {"channel": channel, "ts": ids.format_ts(ts_us)}


# --- reads ---------------------------------------------------------------------------------


async def permalink(rt: Runtime, who: store.Identity, channel: str,
                    ts_us: int) -> dict[str, Any]:
    """Slack's permalink form; a reply's names its thread and channel."""
    await channels.visible_channel(rt, who, channel)
    row = await store_messages.get_message(rt.db, channel, ts_us)
    if row is None:
        raise ApiError("message_not_found")
    url = (f"https://{who.team_domain}.backchannel.local/archives/{channel}/"
           f"p{ids.format_ts(ts_us).replace('.', '')}")
    if row["thread_ts_us"] is not None:
        url += f"?thread_ts={ids.format_ts(row['thread_ts_us'])}&cid={channel}"
    return {"channel": channel, "permalink": url}


@dataclasses.dataclass(frozen=True)
class Window:
    """Which part of a thread to read: after the cursor, within [oldest, latest]."""

    limit: int
    after_us: int | None = None
    oldest_us: int | None = None
    latest_us: int | None = None
    inclusive: bool = False


async def replies(rt: Runtime, who: store.Identity, channel: str, ts_us: int,
                  window: Window) -> dict[str, Any]:
    """conversations.replies: the parent first (on the first page), then replies oldest
    first; ``ts`` may name the parent or any reply of the thread."""
    row = await channels.visible_channel(rt, who, channel)
    first_page = window.after_us is None
    limit = window.limit - 1 if first_page else window.limit
    parent, rows = await store_messages.thread(
        rt.db, channel, ts_us, after_us=window.after_us, latest_us=window.latest_us,
        oldest_us=window.oldest_us, inclusive=window.inclusive, limit=limit)
    if parent is None:
        raise ApiError("thread_not_found")
    has_more = len(rows) > limit
    page = ([parent] if first_page else []) + rows[:limit]
    last = page[-1]["ts_us"] if page else None
    shaped = await annotate(rt, channel, [row_to_message(r, row["team_id"]) for r in page])
    return {"messages": shaped, "has_more": has_more, "last": last}


# --- ephemeral -----------------------------------------------------------------------------


async def post_ephemeral(rt: Runtime, who: store.Identity, channel: str, user: str,
                         body: Content, thread_us: int | None) -> dict[str, Any]:
    """A message only ``user`` sees, on their sockets now: never stored, so not in history
    and gone on reload, as in Slack. Both the caller and ``user`` must be members."""
    channel = await target(rt, who, channel)
    row = await channels.visible_channel(rt, who, channel)
    if row["is_archived"]:
        raise ApiError("is_archived")
    if not await store.is_member(rt.db, channel, who.user_id):
        raise ApiError("not_in_channel")
    if not await store.is_member(rt.db, channel, user):
        raise ApiError("user_not_in_channel")
    if thread_us is not None:
        parent = await store_messages.get_message(rt.db, channel, thread_us)
        if parent is None:
            raise ApiError("thread_not_found")
        thread_us = parent["thread_ts_us"] or thread_us
    ts = ids.format_ts(ids.now_us())
    msg = message_shape(who, body.text, ts, thread_us, None, **body.columns())
    rt.outbox.ephemeral(user, events.ephemeral_message(msg, channel))
    return {"message_ts": ts}
