"""SQL of scheduled messages (chat.scheduleMessage): rows on their channel's shard, claimed
by whichever webapp posts them when due.

A claim is a lease (``claimed_until``, µs): the claiming webapp posts the message and then
deletes the row. If it dies in between, the lease runs out and another webapp claims the row
again; the post carries the row's id as its client_msg_id, so a post that had committed is
found instead of repeated (webapp/store/messages.py). A row under a live claim is being
posted and can no longer be deleted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomysql

from webapp.db import Database
from webapp.store.streams import lock_stream


async def schedule(db: Database, row: dict[str, Any], window_s: int, most: int) -> bool:
    """Insert ``row`` unless the channel already has ``most`` messages scheduled within
    ``window_s`` seconds around its post_at (False then). The channel's stream lock orders
    concurrent schedulers of one channel, so two cannot both take the last place."""

    async def tx(cur: aiomysql.DictCursor) -> bool:
        await lock_stream(cur, row["channel_id"])
        half = window_s // 2
        await cur.execute(
            "SELECT COUNT(*) AS n FROM scheduled_messages WHERE channel_id=%s "
            "AND post_at >= %s AND post_at < %s",
            (row["channel_id"], row["post_at"] - half, row["post_at"] + window_s - half))
        if int((await cur.fetchone())["n"]) >= most:
            return False
        await cur.execute(
            "INSERT INTO scheduled_messages (id, channel_id, user_id, post_at, date_created, "
            "text, blocks, attachments, thread_ts_us, reply_broadcast) VALUES (%(id)s, "
            "%(channel_id)s, %(user_id)s, %(post_at)s, %(date_created)s, %(text)s, "
            "%(blocks)s, %(attachments)s, %(thread_ts_us)s, %(reply_broadcast)s)", row)
        return True

    return await db.transact(row["channel_id"], tx)


async def get(db: Database, channel_id: str, scheduled_id: str) -> dict[str, Any] | None:
    async with db.chat(channel_id) as cur:
        await cur.execute("SELECT * FROM scheduled_messages WHERE id=%s AND channel_id=%s",
                          (scheduled_id, channel_id))
        return await cur.fetchone()


async def delete_unclaimed(db: Database, channel_id: str, user_id: str, scheduled_id: str,
                           now_us: int) -> bool:
    """Delete the user's scheduled message unless a webapp is posting it; whether it went.
    The claim's row lock orders this against a claim in flight: one of the two wins."""

    async def tx(cur: aiomysql.DictCursor) -> bool:
        await cur.execute(
            "DELETE FROM scheduled_messages WHERE id=%s AND channel_id=%s AND user_id=%s "
            "AND claimed_until < %s", (scheduled_id, channel_id, user_id, now_us))
        return bool(cur.rowcount)

    return await db.transact(channel_id, tx)


async def delete(db: Database, channel_id: str, scheduled_id: str) -> None:
    """The row of a message posted (or dropped) by its claimant."""

    async def tx(cur: aiomysql.DictCursor) -> None:
        await cur.execute("DELETE FROM scheduled_messages WHERE id=%s", (scheduled_id,))

    await db.transact(channel_id, tx)


async def claim_due(db: Database, shard: str, now_s: int, now_us: int, lease_us: int,
                    batch: int) -> list[dict[str, Any]]:
    """Claim up to ``batch`` due, unclaimed rows of a shard, oldest post_at first. SKIP
    LOCKED lets webapps polling at once each take different rows instead of queueing."""

    async def tx(cur: aiomysql.DictCursor) -> list[dict[str, Any]]:
        await cur.execute(
            "SELECT * FROM scheduled_messages WHERE post_at <= %s AND claimed_until < %s "
            "ORDER BY post_at, id LIMIT %s FOR UPDATE SKIP LOCKED", (now_s, now_us, batch))
        rows = list(await cur.fetchall())
        if rows:
            marks = ",".join(["%s"] * len(rows))
            await cur.execute(
                f"UPDATE scheduled_messages SET claimed_until=%s WHERE id IN ({marks})",
                [now_us + lease_us, *(r["id"] for r in rows)])
        return rows

    return await db.transact_shard(shard, tx)


async def list_for_user(db: Database, user_id: str, channel_id: str | None, *,
                        after: tuple[int, str] | None, oldest: int | None,
                        latest: int | None, limit: int) -> list[dict[str, Any]]:
    """The user's pending messages by (post_at, id) after ``after``, within [oldest,
    latest]: up to ``limit + 1`` so the caller can tell whether there is more. One shard for
    a channel; every shard otherwise (each returns its first ``limit + 1``, merged)."""
    where = ["user_id=%s"]
    params: list[Any] = [user_id]
    if channel_id is not None:
        where.append("channel_id=%s")
        params.append(channel_id)
    if after is not None:
        where.append("(post_at > %s OR (post_at = %s AND id > %s))")
        params += [after[0], after[0], after[1]]
    if oldest is not None:
        where.append("post_at >= %s")
        params.append(oldest)
    if latest is not None:
        where.append("post_at <= %s")
        params.append(latest)
    sql = (f"SELECT * FROM scheduled_messages WHERE {' AND '.join(where)} "
           "ORDER BY post_at, id LIMIT %s")
    params.append(limit + 1)

    async def one(cur: aiomysql.DictCursor) -> list[dict[str, Any]]:
        await cur.execute(sql, params)
        return list(await cur.fetchall())

    if channel_id is not None:
        async with db.chat(channel_id) as cur:
            return await one(cur)
    parts = await asyncio.gather(*(db.transact_shard(s, one) for s in db.shards()))
    rows = sorted((r for part in parts for r in part), key=lambda r: (r["post_at"], r["id"]))
    return rows[:limit + 1]
