"""SQL of reactions, and the one read that gives a page of messages their reactions and pins.

A reaction lives on its channel's shard, beside its message. Every change locks the channel's
stream first (as posts do), then checks and writes under that lock and appends its event in
the same transaction, so two people reacting at once are serialised and counted right.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiomysql

from cluster import ids
from webapp.db import Database
from webapp.slack import events
from webapp.store.directory import Identity

# the post path's stream lock and visibility check: reactions and pins lock a channel exactly
# as posts do, so every writer of a channel's rows queues on the same lock
from webapp.store.messages import Position, PostRefused, lock_channel, message_row

# Slack's limits: distinct emoji on one message (too_many_emoji), and reactions one person
# may add to one message (too_many_reactions)
MAX_EMOJI = 50
MAX_PER_PERSON = 23


@dataclasses.dataclass(frozen=True)
class Extras:
    """What people added to some messages of one channel: reaction rows (name, user_id) per
    message ts in the order they came, and the pin rows (pinned_by, created) by ts."""

    reactions: dict[int, list[dict[str, Any]]]
    pins: dict[int, dict[str, Any]]


async def extras_in(cur: aiomysql.DictCursor, channel_id: str, ts_list: list[int]) -> Extras:
    """Reactions and pins of the messages ``ts_list`` of one channel: one query, whatever the
    number of messages (a history page reads them all at once)."""
    if not ts_list:
        return Extras({}, {})
    marks = ",".join(["%s"] * len(ts_list))
    await cur.execute(
        f"SELECT 0 AS pin, ts_us, name, user_id, created FROM reactions WHERE channel_id=%s "
        f"AND ts_us IN ({marks}) UNION ALL "
        f"SELECT 1, ts_us, NULL, pinned_by, created FROM pins WHERE channel_id=%s "
        f"AND ts_us IN ({marks}) ORDER BY pin, created",
        [channel_id, *ts_list, channel_id, *ts_list])
    found = Extras({}, {})
    for row in await cur.fetchall():
        if row["pin"]:
            found.pins[row["ts_us"]] = {"pinned_by": row["user_id"], "created": row["created"]}
        else:
            found.reactions.setdefault(row["ts_us"], []).append(row)
    return found


async def extras(db: Database, channel_id: str, ts_list: list[int]) -> Extras:
    async with db.chat(channel_id) as cur:
        return await extras_in(cur, channel_id, ts_list)


async def message_rows(db: Database, channel_id: str, ts_list: list[int]
                       ) -> tuple[list[dict[str, Any]], Extras]:
    """The messages ``ts_list`` of one channel that still exist, and their extras."""
    if not ts_list:
        return [], Extras({}, {})
    marks = ",".join(["%s"] * len(ts_list))
    async with db.chat(channel_id) as cur:
        await cur.execute(f"SELECT * FROM messages WHERE channel_id=%s AND ts_us IN ({marks})",
                          [channel_id, *ts_list])
        rows = list(await cur.fetchall())
        return rows, await extras_in(cur, channel_id, [r["ts_us"] for r in rows])


# --- changes -------------------------------------------------------------------------------


async def lock_message(cur: aiomysql.DictCursor, channel_id: str, who: Identity,
                       ts_us: int) -> tuple[Position, dict[str, Any]]:
    """Lock the channel's stream and find the message a member may react to or pin:
    channel_not_found (hidden or absent), is_archived, not_in_channel, message_not_found
    (a deleted thread parent's tombstone included)."""
    pos, channel = await lock_channel(cur, channel_id, who)
    if channel["is_archived"]:
        raise PostRefused("is_archived")
    if not channel["member"]:
        raise PostRefused("not_in_channel")
    row = await message_row(cur, channel_id, ts_us)
    if row is None or row["subtype"] == "tombstone":
        raise PostRefused("message_not_found")
    return pos, row


async def _present(cur: aiomysql.DictCursor, channel_id: str,
                   ts_us: int) -> list[dict[str, Any]]:
    """A plain read under the stream lock: every writer of these rows holds that lock."""
    await cur.execute("SELECT name, user_id FROM reactions WHERE channel_id=%s AND ts_us=%s",
                      (channel_id, ts_us))
    return list(await cur.fetchall())


def _check_add(present: list[dict[str, Any]], name: str, user_id: str) -> None:
    if any(r["name"] == name and r["user_id"] == user_id for r in present):
        raise PostRefused("already_reacted")
    if name not in {r["name"] for r in present} and \
            len({r["name"] for r in present}) >= MAX_EMOJI:
        raise PostRefused("too_many_emoji")
    if sum(r["user_id"] == user_id for r in present) >= MAX_PER_PERSON:
        raise PostRefused("too_many_reactions")


async def add_reaction(db: Database, channel_id: str, who: Identity, ts_us: int,
                       name: str) -> None:
    """One transaction on the channel's shard: check, append reaction_added, insert."""

    async def add(cur: aiomysql.DictCursor) -> None:
        pos, row = await lock_message(cur, channel_id, who, ts_us)
        _check_add(await _present(cur, channel_id, ts_us), name, who.user_id)
        _, created = await pos.append(cur, lambda ts: events.reaction_added(
            who.user_id, name, row["user_id"], channel_id, ids.format_ts(ts_us), ts))
        await cur.execute(
            "INSERT INTO reactions (channel_id, ts_us, name, user_id, created) "
            "VALUES (%s, %s, %s, %s, %s)", (channel_id, ts_us, name, who.user_id, created))

    await db.transact(channel_id, add)


async def remove_reaction(db: Database, channel_id: str, who: Identity, ts_us: int,
                          name: str) -> None:
    """The caller's own reaction only: no_reaction when it has none of this name here."""

    async def remove(cur: aiomysql.DictCursor) -> None:
        pos, row = await lock_message(cur, channel_id, who, ts_us)
        await cur.execute(
            "SELECT 1 FROM reactions WHERE channel_id=%s AND ts_us=%s AND name=%s "
            "AND user_id=%s", (channel_id, ts_us, name, who.user_id))
        if await cur.fetchone() is None:
            raise PostRefused("no_reaction")
        await pos.append(cur, lambda ts: events.reaction_removed(
            who.user_id, name, row["user_id"], channel_id, ids.format_ts(ts_us), ts))
        await cur.execute(
            "DELETE FROM reactions WHERE channel_id=%s AND ts_us=%s AND name=%s "
            "AND user_id=%s", (channel_id, ts_us, name, who.user_id))

    await db.transact(channel_id, remove)


# --- one person's reactions (reactions.list) -------------------------------------------------

# the reacted messages a viewer may see: in the workspace, and public or the viewer's own
_VISIBLE = (
    "FROM reactions r JOIN channels c ON c.id=r.channel_id WHERE r.user_id=%s "
    "AND c.team_id=%s AND ((c.is_private=0 AND c.is_im=0 AND c.is_mpim=0) OR EXISTS("
    "SELECT 1 FROM channel_members m WHERE m.channel_id=c.id AND m.user_id=%s)) "
    "GROUP BY r.channel_id, r.ts_us")

# a position in reactions.list: (latest reaction's created, channel_id, ts_us), newest first
Key = tuple[int, str, int]
START: Key = (2**62, "", 0)


async def reacted(db: Database, user_id: str, viewer: Identity, before: Key, skip: int,
                  take: int) -> list[Key]:
    """The messages ``user_id`` reacted to that ``viewer`` may see, by their newest reaction
    by that user, newest first: those after ``before``, less the first ``skip``, at most
    ``take``. A scatter read: each shard gives its first ``skip + take``, merged."""

    async def one(cur: aiomysql.DictCursor) -> list[Key]:
        await cur.execute(
            f"SELECT r.channel_id, r.ts_us, MAX(r.created) AS at {_VISIBLE} "
            "HAVING (at, r.channel_id, r.ts_us) < (%s, %s, %s) "
            "ORDER BY at DESC, r.channel_id DESC, r.ts_us DESC LIMIT %s",
            (user_id, viewer.team_id, viewer.user_id, *before, skip + take))
        return [(int(r["at"]), r["channel_id"], int(r["ts_us"])) for r in await cur.fetchall()]

    parts = await asyncio.gather(*(db.transact_shard(s, one) for s in db.shards()))
    merged = sorted((k for part in parts for k in part), reverse=True)
    return merged[skip:skip + take]


async def count_reacted(db: Database, user_id: str, viewer: Identity) -> int:
    """How many messages reacted() can list in all (reactions.list's paging total)."""

    async def one(cur: aiomysql.DictCursor) -> int:
        await cur.execute(f"SELECT COUNT(*) AS n FROM (SELECT r.channel_id {_VISIBLE}) t",
                          (user_id, viewer.team_id, viewer.user_id))
        return int((await cur.fetchone())["n"])

    return sum(await asyncio.gather(*(db.transact_shard(s, one) for s in db.shards())))
