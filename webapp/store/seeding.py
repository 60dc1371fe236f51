"""Bulk writes of seeding: many members joining one channel, many users announced to their
workspace. The same rows and events as one join_channel per user (webapp.store.channels),
written a chunk per transaction so that a 5,000-user workspace seeds in seconds, and each
step idempotent: running it again skips what is there and repairs what is missing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import aiomysql

from cluster import ids
from webapp.db import Database
from webapp.slack import events
from webapp.store.streams import append_many_locked, lock_streams

Shape = Callable[[dict[str, Any]], dict[str, Any]]
# rows (and events) per transaction: short enough to hold the locks for milliseconds
CHUNK = 500


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]


async def join_many(db: Database, channel: dict[str, Any], users: Sequence[str],
                    shape: Shape) -> None:
    """Add ``users`` to ``channel``: memberships and member_joined_channel (the channel's
    shard) first, then per user shard the lookup rows and channel_joined on each user's
    personal stream, which carries the channel's seq before the join (``_at``) as
    join_channel's does."""
    at: dict[str, int] = {}
    for chunk in _chunks(users):
        at |= await db.transact(channel["id"], lambda cur, c=chunk: _add_members(
            cur, channel, c))
    by_shard: dict[str, list[str]] = {}
    for user in users:
        by_shard.setdefault(db.shard_of(user), []).append(user)
    for shard, group in by_shard.items():
        for chunk in _chunks(group):
            await db.transact_shard(shard, lambda cur, c=chunk: _link_members(
                cur, channel, c, at, shape))


async def _add_members(cur: aiomysql.DictCursor, channel: dict[str, Any],
                       users: Sequence[str]) -> dict[str, int]:
    """The new members' rows and events; user -> the channel's seq before its join."""
    channel_id = channel["id"]
    heads = await lock_streams(cur, [channel_id])
    marks = ",".join(["%s"] * len(users))
    await cur.execute(f"SELECT user_id FROM channel_members WHERE channel_id=%s AND "
                      f"user_id IN ({marks})", (channel_id, *users))
    there = {r["user_id"] for r in await cur.fetchall()}
    new = [u for u in users if u not in there]
    if not new:
        return {}
    joined = ids.now_us() // 1_000_000
    await cur.executemany("INSERT INTO channel_members (channel_id, user_id, joined) "
                          "VALUES (%s, %s, %s)", [(channel_id, u, joined) for u in new])
    posted = await append_many_locked(cur, heads, [
        (channel_id, lambda ts, u=u: events.member_joined_channel(channel, u, ts))
        for u in new])
    return {p.event["user"]: p.seq - 1 for p in posted}


async def _link_members(cur: aiomysql.DictCursor, channel: dict[str, Any],
                        users: Sequence[str], at: dict[str, int], shape: Shape) -> None:
    """Lookup rows of users of one shard, and channel_joined for each row that is new."""
    heads = await lock_streams(cur, list(users))
    marks = ",".join(["%s"] * len(users))
    await cur.execute(f"SELECT user_id FROM user_channels WHERE channel_id=%s AND "
                      f"user_id IN ({marks})", (channel["id"], *users))
    there = {r["user_id"] for r in await cur.fetchall()}
    new = [u for u in users if u not in there]
    if not new:
        return
    await cur.executemany(
        "INSERT INTO user_channels (user_id, channel_id, joined_at) VALUES (%s, %s, %s)",
        [(u, channel["id"], at.get(u, 0)) for u in new])
    shown = shape(channel)
    await append_many_locked(cur, heads, [
        (u, lambda ts, u=u: events.channel_joined(shown, ts, at.get(u))) for u in new])


async def announce_joins(db: Database, team_id: str, users: Sequence[dict[str, Any]]) -> None:
    """team_join for each new user (Slack's user objects) on the workspace stream."""
    for chunk in _chunks(users):
        async def append(cur: aiomysql.DictCursor, chunk: Sequence[dict[str, Any]] = chunk
                         ) -> None:
            heads = await lock_streams(cur, [team_id])
            await append_many_locked(cur, heads, [
                (team_id, lambda ts, u=u: events.team_join(u, ts)) for u in chunk])

        await db.transact(team_id, append)
