"""SQL of conversations: channels, memberships and the per-user lookup rows.

A channel's rows live on its shard; the lookup row (user -> channels) lives on the user's
shard (Vitess's lookup vindex), so "my channels" is a single-shard read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiomysql

from cluster import ids
from webapp.db import Database
from webapp.slack import events
from webapp.store.streams import Posted, append_locked, lock_stream

log = logging.getLogger(__name__)

Shape = Callable[[dict[str, Any]], dict[str, Any]]


class Conflict(Exception):
    """A uniqueness rule was hit (e.g. a channel name already taken)."""


async def get_channel(db: Database, channel_id: str) -> dict[str, Any] | None:
    async with db.chat(channel_id) as cur:
        await cur.execute("SELECT * FROM channels WHERE id=%s", (channel_id,))
        return await cur.fetchone()


async def is_member(db: Database, channel_id: str, user_id: str) -> bool:
    async with db.chat(channel_id) as cur:
        await cur.execute(
            "SELECT 1 FROM channel_members WHERE channel_id=%s AND user_id=%s",
            (channel_id, user_id),
        )
        return await cur.fetchone() is not None


async def user_channels(db: Database, user_id: str) -> list[str]:
    async with db.chat(user_id) as cur:
        await cur.execute(
            "SELECT channel_id FROM user_channels WHERE user_id=%s ORDER BY channel_id",
            (user_id,),
        )
        return [r["channel_id"] for r in await cur.fetchall()]


async def many_memberships(db: Database, users: list[str]) -> dict[str, dict[str, int]]:
    """user -> {channel id -> the channel's seq just before the user joined (where a resume
    of a channel joined while away starts; older memberships read as 0)}, for many users
    at once: one query per shard touched."""
    out: dict[str, dict[str, int]] = {user: {} for user in users}
    by_shard: dict[str, list[str]] = {}
    for user in out:
        by_shard.setdefault(db.shard_of(user), []).append(user)
    for group in by_shard.values():
        async with db.chat(group[0]) as cur:
            marks = ",".join(["%s"] * len(group))
            await cur.execute(
                "SELECT user_id, channel_id, joined_at FROM user_channels "
                f"WHERE user_id IN ({marks})", group)
            for r in await cur.fetchall():
                out[r["user_id"]][r["channel_id"]] = int(r["joined_at"] or 0)
    return out


async def create_channel(
    db: Database, team_id: str, creator: str, name: str, is_private: bool, shape: Shape,
) -> tuple[dict[str, Any], list[Posted]]:
    """Reserve the name (directory), create the channel with its creator as a member (its
    shard), then write the creator's lookup row (the creator's shard). Each step is its own
    retried transaction, and a step that still fails undoes the ones before it: a name is
    never left taken without a channel its creator is in."""
    channel_id = ids.new_id("G" if is_private else "C")
    row = {"id": channel_id, "team_id": team_id, "name": name, "is_private": int(is_private),
           "is_archived": 0, "creator": creator, "created": ids.now_us() // 1_000_000}
    await _reserve_name(db, row)
    try:
        joined = await db.transact(channel_id, lambda cur: _insert_channel(cur, row))
    except BaseException:
        await _abandon_channel(db, row, created=False)
        raise
    try:
        personal = await db.transact(creator, lambda cur: _link_member(cur, row, creator,
                                                                         shape))
    except BaseException:
        await _abandon_channel(db, row, created=True)
        raise
    return row, [p for p in (joined, personal) if p is not None]


async def _reserve_name(db: Database, row: dict[str, Any]) -> None:
    async def insert(cur: aiomysql.DictCursor) -> None:
        await cur.execute(
            "INSERT INTO channel_names (team_id, name, channel_id) VALUES (%s, %s, %s)",
            (row["team_id"], row["name"], row["id"]),
        )

    try:
        await db.transact_directory(insert)
    except aiomysql.IntegrityError as exc:
        raise Conflict("name_taken") from exc


async def _insert_channel(cur: aiomysql.DictCursor, row: dict[str, Any]) -> Posted:
    """The channel, its stream and its creator's membership appear together or not at all."""
    await cur.execute("INSERT INTO stream_seq VALUES (%s, 0, 0)", (row["id"],))
    await cur.execute(
        "INSERT INTO channels (id, team_id, name, is_private, is_archived, creator, "
        "created) VALUES (%(id)s, %(team_id)s, %(name)s, %(is_private)s, "
        "%(is_archived)s, %(creator)s, %(created)s)", row,
    )
    posted = await _insert_member(cur, row, row["creator"], 0, 0)
    assert posted is not None  # a brand-new channel has no members yet
    return posted


async def _abandon_channel(db: Database, row: dict[str, Any], *, created: bool) -> None:
    """Undo a create that failed part-way. Nobody has been told the channel id yet, so its
    rows can go; the name goes last, so it is never free while a channel still claims it,
    and stays reserved if the channel could not be removed."""
    try:
        if created:
            await db.transact(row["id"], lambda cur: _delete_channel_rows(cur, row["id"]))

        async def release(cur: aiomysql.DictCursor) -> None:
            await cur.execute(
                "DELETE FROM channel_names WHERE team_id=%s AND name=%s AND channel_id=%s",
                (row["team_id"], row["name"], row["id"]),
            )

        await db.transact_directory(release)
    except Exception:
        log.exception("could not undo the create of channel %s (%s)", row["id"], row["name"])


async def _delete_channel_rows(cur: aiomysql.DictCursor, channel_id: str) -> None:
    await cur.execute("SELECT 1 FROM stream_seq WHERE stream_id=%s FOR UPDATE", (channel_id,))
    for table, column in (("events", "stream_id"), ("channel_members", "channel_id"),
                          ("messages", "channel_id"), ("channels", "id"),
                          ("stream_seq", "stream_id")):
        await cur.execute(f"DELETE FROM {table} WHERE {column}=%s", (channel_id,))


async def join_channel(
    db: Database, channel: dict[str, Any], user_id: str, shape: Shape,
) -> list[Posted]:
    """Add a member; returns the events to deliver (none if already a member).

    The membership (channel's shard) is the source of truth and is written first; the lookup
    row (user's shard) follows in its own transaction. If that one failed before, calling
    join again repairs it, and only then announces the join on the user's personal stream,
    so the user's gateway subscribes to the channel even on a retried call.
    """
    channel_id = channel["id"]

    async def add(cur: aiomysql.DictCursor) -> Posted | None:
        seq, last_ts_us = await lock_stream(cur, channel_id)
        return await _insert_member(cur, channel, user_id, seq, last_ts_us)

    joined = await db.transact(channel_id, add)
    at = joined.seq - 1 if joined is not None else None
    personal = await db.transact(user_id, lambda cur: _link_member(cur, channel, user_id,
                                                                     shape, at))
    return [p for p in (joined, personal) if p is not None]


async def _insert_member(
    cur: aiomysql.DictCursor, channel: dict[str, Any], user_id: str, seq: int, last_ts_us: int,
) -> Posted | None:
    """Membership row plus member_joined_channel; the channel's stream must be locked."""
    channel_id = channel["id"]
    await cur.execute(
        "INSERT IGNORE INTO channel_members (channel_id, user_id, joined) "
        "VALUES (%s, %s, %s)", (channel_id, user_id, ids.now_us() // 1_000_000),
    )
    if cur.rowcount == 0:
        return None
    posted, _ = await append_locked(cur, channel_id, seq, last_ts_us, lambda ts:
                                    events.member_joined_channel(channel, user_id, ts))
    return posted


async def _link_member(
    cur: aiomysql.DictCursor, channel: dict[str, Any], user_id: str, shape: Shape,
    at: int | None = None,
) -> Posted | None:
    """The lookup vindex row on the user's shard, plus channel_joined on the personal stream
    when the row is new (the event is what makes a live gateway subscribe). ``at``, the
    channel's seq before the join, lets the gateway subscribe from the join itself."""
    seq, last_ts_us = await lock_stream(cur, user_id)
    await cur.execute(
        "INSERT IGNORE INTO user_channels (user_id, channel_id, joined_at) VALUES (%s, %s, %s)",
        (user_id, channel["id"], at or 0),
    )
    if cur.rowcount == 0:
        return None
    posted, _ = await append_locked(cur, user_id, seq, last_ts_us, lambda ts:
                                    events.channel_joined(shape(channel), ts, at))
    return posted
