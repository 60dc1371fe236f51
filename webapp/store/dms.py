"""SQL of DMs and group DMs.

A DM is found by its member set: the directory's dm_index maps (workspace, sorted member
ids) to its id, so opening it twice, or by another of its members, gives the same one. It
is created like a channel, except that all its members are in it from the start and each
learns of it on their personal stream (im_created, mpim_joined), which subscribes their
sockets. Every step is idempotent: a later open repairs an earlier one that failed midway.
"""

from __future__ import annotations

from typing import Any

import aiomysql

from cluster import ids
from webapp.db import Database
from webapp.slack import events
from webapp.slack.shapes import channel_shape
from webapp.store.channels import Refused, announce, append_here, insert_row, new_row
from webapp.store.streams import Posted, append_locked, lock_stream


def members_key(members: list[str]) -> str:
    return ",".join(sorted(set(members)))


async def team_users(db: Database, team_id: str, user_ids: list[str]
                     ) -> dict[str, dict[str, Any]]:
    """id -> {name, deleted} of those of ``user_ids`` that are in the workspace."""
    if not user_ids:
        return {}
    async with db.directory() as cur:
        marks = ",".join(["%s"] * len(user_ids))
        await cur.execute(
            f"SELECT id, name, deleted FROM users WHERE team_id=%s AND id IN ({marks})",
            [team_id, *user_ids])
        return {r["id"]: r for r in await cur.fetchall()}


async def find(db: Database, team_id: str, key: str) -> str | None:
    async with db.directory() as cur:
        await cur.execute("SELECT channel_id FROM dm_index WHERE team_id=%s AND members_key=%s",
                          (team_id, key))
        row = await cur.fetchone()
    return row["channel_id"] if row else None


async def claim(db: Database, team_id: str, key: str, channel_id: str) -> str:
    """Register ``channel_id`` for the member set unless one is already there; returns
    the one that stands (two concurrent opens of the same set agree on one id)."""

    async def tx(cur: aiomysql.DictCursor) -> str:
        await cur.execute(
            "INSERT IGNORE INTO dm_index (team_id, members_key, channel_id) VALUES (%s, %s, %s)",
            (team_id, key, channel_id))
        await cur.execute("SELECT channel_id FROM dm_index WHERE team_id=%s AND members_key=%s",
                          (team_id, key))
        return (await cur.fetchone())["channel_id"]

    return await db.transact_directory(tx)


def dm_row(channel_id: str, team_id: str, opener: str, members: list[str],
           names: dict[str, str]) -> dict[str, Any]:
    """A 1:1 DM keeps its member ids as its (never shown) name; a group DM is named as
    Slack names it, mpdm-<names>-1, from its members' names at creation."""
    if channel_id.startswith("D"):
        return new_row(channel_id, team_id, opener, members_key(members), is_private=True,
                       is_im=True)
    name = "mpdm-" + "--".join(names[m] for m in members) + "-1"
    return new_row(channel_id, team_id, opener, name[:80], is_private=True, is_mpim=True)


async def ensure(db: Database, row: dict[str, Any], members: list[str]
                 ) -> tuple[dict[str, Any], bool]:
    """Create the DM with every member in it (its shard), then each member's lookup row
    with its announcement (each member's shard, in the order given: the opener's last);
    (the stored row, whether it was new). Idempotent: run again, it completes what a
    failed run left undone."""

    async def create(cur: aiomysql.DictCursor) -> tuple[dict[str, Any], bool]:
        await lock_stream(cur, row["id"])
        created = await insert_row(cur, row, ignore=True) > 0
        joined = ids.now_us() // 1_000_000
        for member in members:
            await cur.execute(
                "INSERT IGNORE INTO channel_members (channel_id, user_id, joined, is_open) "
                "VALUES (%s, %s, %s, 1)", (row["id"], member, joined))
        await cur.execute("SELECT * FROM channels WHERE id=%s", (row["id"],))
        return await cur.fetchone(), created

    stored, created = await db.transact(row["id"], create)
    for member in members:
        await db.transact(member, lambda cur, m=member: _link(cur, stored, m))
    return stored, created


async def _link(cur: aiomysql.DictCursor, row: dict[str, Any], member: str) -> Posted | None:
    seq, last_ts_us = await lock_stream(cur, member)
    await cur.execute(
        "INSERT IGNORE INTO user_channels (user_id, channel_id, joined_at) VALUES (%s, %s, 0)",
        (member, row["id"]))
    if cur.rowcount == 0:
        return None
    shape = channel_shape(row, True, viewer=member, member={"last_read_us": 0, "is_open": 1})
    build = events.im_created if row["is_im"] else events.mpim_joined
    posted, _ = await append_locked(cur, member, seq, last_ts_us, lambda ts: build(shape, ts))
    return posted


async def set_open(db: Database, channel: dict[str, Any], user_id: str, is_open: bool
                   ) -> bool:
    """Open or close the DM in the user's sidebar; whether it changed. The user's sockets
    learn it by im_open / mpim_open / im_close / mpim_close."""
    channel_id = channel["id"]

    async def tx(cur: aiomysql.DictCursor) -> tuple[bool, list[Any]]:
        await cur.execute(
            "SELECT is_open FROM channel_members WHERE channel_id=%s AND user_id=%s FOR UPDATE",
            (channel_id, user_id))
        row = await cur.fetchone()
        if row is None:
            raise Refused("channel_not_found")
        if bool(row["is_open"]) == is_open:
            return False, []
        await cur.execute(
            "UPDATE channel_members SET is_open=%s WHERE channel_id=%s AND user_id=%s",
            (int(is_open), channel_id, user_id))
        build = events.dm_opened if is_open else events.dm_closed
        return True, await append_here(db, channel_id, cur, [(user_id, lambda ts: build(
            channel, user_id, ts))])

    changed, later = await db.transact(channel_id, tx)
    await announce(db, later)
    return changed
