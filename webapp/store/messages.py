"""SQL of messages: the post transaction and history reads."""

from __future__ import annotations

from typing import Any

import aiomysql

from cluster import ids
from webapp.db import Database
from webapp.slack.shapes import message_shape, row_to_message
from webapp.store.directory import Identity
from webapp.store.streams import Posted, append_locked


class PostRefused(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


async def post_message(
    db: Database, channel_id: str, who: Identity, text: str,
    thread_ts_us: int | None, client_msg_id: str | None,
) -> tuple[Posted | None, dict[str, Any]]:
    """One single-shard transaction: check, allocate seq+ts, insert message and event.

    A ``client_msg_id`` this user already posted in this channel returns that message and
    no event (None): the attempt that committed it also committed its event, which reaches
    the channel even if that attempt died before notifying (channel servers' head checks).
    """

    async def post(cur: aiomysql.DictCursor) -> tuple[Posted, int] | dict[str, Any]:
        row = await _lock_for_post(cur, channel_id, who, thread_ts_us)
        # after the stream lock: posts to the channel are serialised, so an earlier attempt
        # with this id has either committed (and is found) or has not begun
        if client_msg_id is not None:
            earlier = await _posted_with_client_id(cur, channel_id, who.user_id, client_msg_id)
            if earlier is not None:
                return earlier

        def build(ts: str) -> dict[str, Any]:
            msg = message_shape(who, text, ts, thread_ts_us, client_msg_id)
            return {**msg, "channel": channel_id, "event_ts": ts}

        posted, ts_us = await append_locked(cur, channel_id, row["seq"], row["last_ts_us"],
                                             build)
        await cur.execute(
            "INSERT INTO messages (channel_id, ts_us, seq, user_id, bot_id, text, "
            "thread_ts_us, client_msg_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (channel_id, ts_us, posted.seq, who.user_id, who.bot_id, text, thread_ts_us,
             client_msg_id),
        )
        return posted, ts_us

    try:
        done = await db.transact(channel_id, post)
    except aiomysql.IntegrityError:
        if client_msg_id is None:
            raise
        # the unique (channel, user, client_msg_id) index caught a twin our lookup missed
        # (its snapshot predated the twin's commit): a fresh transaction finds it
        done = await db.transact(channel_id, post)
    if isinstance(done, dict):
        return None, row_to_message(done, who.team_id)
    posted, ts_us = done
    return posted, message_shape(who, text, ids.format_ts(ts_us), thread_ts_us, client_msg_id)


async def _posted_with_client_id(
    cur: aiomysql.DictCursor, channel_id: str, user_id: str, client_msg_id: str,
) -> dict[str, Any] | None:
    """A plain read, taken under the stream lock: a locking read would gap-lock the unique
    index, and two posts to different channels whose keys share a gap would then deadlock
    on their inserts."""
    await cur.execute(
        "SELECT * FROM messages WHERE channel_id=%s AND user_id=%s AND client_msg_id=%s",
        (channel_id, user_id, client_msg_id),
    )
    return await cur.fetchone()


async def _lock_for_post(
    cur: aiomysql.DictCursor, channel_id: str, who: Identity, thread_ts_us: int | None,
) -> dict[str, Any]:
    """Lock the channel's stream and check the poster may write there; raises PostRefused."""
    await cur.execute(
        "SELECT c.team_id, c.is_private, c.is_archived, s.seq, s.last_ts_us, "
        "EXISTS(SELECT 1 FROM channel_members m WHERE m.channel_id=c.id "
        "AND m.user_id=%s) AS member FROM channels c "
        "JOIN stream_seq s ON s.stream_id=c.id WHERE c.id=%s FOR UPDATE",
        (who.user_id, channel_id),
    )
    row = await cur.fetchone()
    if row is None or row["team_id"] != who.team_id or (
        row["is_private"] and not row["member"]
    ):
        raise PostRefused("channel_not_found")
    if row["is_archived"]:
        raise PostRefused("is_archived")
    if not row["member"]:
        raise PostRefused("not_in_channel")
    if thread_ts_us is not None:
        await cur.execute(
            "SELECT 1 FROM messages WHERE channel_id=%s AND ts_us=%s",
            (channel_id, thread_ts_us),
        )
        if await cur.fetchone() is None:
            raise PostRefused("thread_not_found")
    return row



async def history(
    db: Database, channel_id: str, *, latest_us: int | None, oldest_us: int,
    latest_inclusive: bool, oldest_inclusive: bool, limit: int,
) -> list[dict[str, Any]]:
    """Newest first, ``limit + 1`` rows so the caller can tell whether there is more."""
    hi_op = "<=" if latest_inclusive else "<"
    lo_op = ">=" if oldest_inclusive else ">"
    latest = latest_us if latest_us is not None else 2**62
    async with db.chat(channel_id) as cur:
        await cur.execute(
            f"SELECT * FROM messages WHERE channel_id=%s AND ts_us {hi_op} %s "
            f"AND ts_us {lo_op} %s ORDER BY ts_us DESC LIMIT %s",
            (channel_id, latest, oldest_us, limit + 1),
        )
        return list(await cur.fetchall())

