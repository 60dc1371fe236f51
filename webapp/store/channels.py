"""SQL of conversations: channels, memberships and the per-user lookup rows.

A channel's rows live on its shard; the lookup row (user -> channels) lives on the user's
shard (Vitess's lookup vindex), so "my channels" is a single-shard read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiomysql

from cluster import ids
from webapp.db import Database
from webapp.slack import events
from webapp.slack.shapes import channel_notice
from webapp.store import messages
from webapp.store.streams import Posted, append_event, append_locked, lock_stream

log = logging.getLogger(__name__)

T = TypeVar("T")
Shape = Callable[[dict[str, Any]], dict[str, Any]]
# an event to append: (stream, build(ts) -> event)
Announcement = tuple[str, Callable[[str], dict[str, Any]]]
Body = Callable[[aiomysql.DictCursor, dict[str, Any]],
                Awaitable[tuple[T, list[Announcement]]]]


class Conflict(Exception):
    """A uniqueness rule was hit (e.g. a channel name already taken)."""


class Refused(Exception):
    """The change does not apply to the channel as it stands under lock (Slack's code)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


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


async def is_linked(db: Database, user_id: str, channel_id: str) -> bool:
    """Whether the user's lookup row for the channel exists (the last step of a join)."""
    async with db.chat(user_id) as cur:
        await cur.execute(
            "SELECT 1 FROM user_channels WHERE user_id=%s AND channel_id=%s",
            (user_id, channel_id))
        return await cur.fetchone() is not None


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


def new_row(channel_id: str, team_id: str, creator: str, name: str, *, is_private: bool,
            is_general: bool = False, is_im: bool = False, is_mpim: bool = False,
            ) -> dict[str, Any]:
    """A channels row as inserted (DMs and group DMs are private: every check that hides
    private channels from non-members hides them too)."""
    now_us = ids.now_us()
    return {"id": channel_id, "team_id": team_id, "name": name,
            "is_private": int(is_private or is_im or is_mpim), "is_archived": 0,
            "creator": creator, "created": now_us // 1_000_000, "is_general": int(is_general),
            "is_im": int(is_im), "is_mpim": int(is_mpim), "updated": now_us // 1000,
            "topic": "", "topic_creator": "", "topic_last_set": 0, "purpose": "",
            "purpose_creator": "", "purpose_last_set": 0, "previous_names": None}


async def create_channel(
    db: Database, team_id: str, creator: str, name: str, is_private: bool, shape: Shape,
    *, is_general: bool = False,
) -> tuple[dict[str, Any], list[Posted]]:
    """Reserve the name (directory), create the channel with its creator as a member (its
    shard), then write the creator's lookup row (the creator's shard). Each step is its own
    retried transaction, and a step that still fails undoes the ones before it: a name is
    never left taken without a channel its creator is in. A public channel is announced
    (channel_created, workspace stream) last, once it is complete; a private one only to
    its creator (group_joined)."""
    channel_id = ids.new_id("G" if is_private else "C")
    row = new_row(channel_id, team_id, creator, name, is_private=is_private,
                  is_general=is_general)
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
    posted = [p for p in (joined, personal) if p is not None]
    if not is_private:
        posted += await announce(db, [(team_id, lambda ts: events.channel_created(
            shape(row), ts))])
    return row, posted


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
    await insert_row(cur, row)
    posted = await _insert_member(cur, row, row["creator"], 0, 0)
    assert posted is not None  # a brand-new channel has no members yet
    return posted


async def insert_row(cur: aiomysql.DictCursor, row: dict[str, Any], *,
                     ignore: bool = False) -> int:
    """Insert a channels row (new_row); with ``ignore``, a row already there stays."""
    verb = "INSERT IGNORE" if ignore else "INSERT"
    await cur.execute(
        f"{verb} INTO channels (id, team_id, name, is_private, is_archived, creator, "
        "created, is_general, is_im, is_mpim, updated) VALUES (%(id)s, %(team_id)s, "
        "%(name)s, %(is_private)s, %(is_archived)s, %(creator)s, %(created)s, "
        "%(is_general)s, %(is_im)s, %(is_mpim)s, %(updated)s)", row,
    )
    return int(cur.rowcount)


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
    inviter: str | None = None,
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
        return await _insert_member(cur, channel, user_id, seq, last_ts_us, inviter)

    joined = await db.transact(channel_id, add)
    at = joined.seq - 1 if joined is not None else None
    personal = await db.transact(user_id, lambda cur: _link_member(cur, channel, user_id,
                                                                     shape, at))
    return [p for p in (joined, personal) if p is not None]


async def _insert_member(
    cur: aiomysql.DictCursor, channel: dict[str, Any], user_id: str, seq: int, last_ts_us: int,
    inviter: str | None = None,
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
                                    events.member_joined_channel(channel, user_id, ts,
                                                                 inviter))
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


# --- changes to an existing channel ---------------------------------------------------------
# Each runs on the channel's shard with the channel locked (its row and its stream, in the
# order a post takes them), re-checks what it depends on under that lock, and appends its
# events in the same transaction when their stream lives on that shard. An event for a
# stream on another shard follows in its own transaction, once the change has committed.


async def _lock_channel(cur: aiomysql.DictCursor, channel_id: str) -> dict[str, Any] | None:
    """The channel row with its stream's position, both X-locked (the statement a post
    locks them with, so the two always take the locks in the same order)."""
    await cur.execute(
        "SELECT c.*, s.seq, s.last_ts_us FROM channels c "
        "JOIN stream_seq s ON s.stream_id=c.id WHERE c.id=%s FOR UPDATE", (channel_id,))
    return await cur.fetchone()


async def append_here(db: Database, key: str, cur: aiomysql.DictCursor,
                       items: list[Announcement]) -> list[Announcement]:
    """Append the events whose stream lives on ``key``'s shard with ``cur``; the rest are
    returned, to be appended after the commit."""
    later = []
    for stream, build in items:
        if db.shard_of(stream) == db.shard_of(key):
            await append_event(cur, stream, build)
        else:
            later.append((stream, build))
    return later


async def announce(db: Database, items: list[Announcement]) -> list[Posted]:
    """Append each event in its own transaction on its stream's shard."""
    posted = []
    for stream, build in items:
        done, _ = await db.transact(stream, lambda cur, s=stream, b=build: append_event(
            cur, s, b))
        posted.append(done)
    return posted


async def _change(db: Database, channel_id: str, body: Body[T]) -> T:
    """Run ``body(cur, locked row)`` -> (result, events) as the channel's transaction."""

    async def tx(cur: aiomysql.DictCursor) -> tuple[T, list[Announcement]]:
        row = await _lock_channel(cur, channel_id)
        if row is None:
            raise Refused("channel_not_found")
        result, items = await body(cur, row)
        return result, await append_here(db, channel_id, cur, items)

    result, later = await db.transact(channel_id, tx)
    await announce(db, later)
    return result


def _lifecycle_stream(row: dict[str, Any]) -> str:
    """Where a channel's lifecycle events go: everyone in the workspace may know of a
    public channel; a private channel's events stay with its members."""
    return row["id"] if row["is_private"] else row["team_id"]


def _public_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("seq", "last_ts_us")}


async def remove_member(db: Database, channel_id: str, user_id: str, actor: str, *,
                        refuse_archived: bool = False) -> bool:
    """Take ``user_id`` out (``actor`` did it: the user, or who kicked); whether they were
    in. member_left_channel goes to the channel; channel_left / group_left to the user,
    whose gateway then unsubscribes them. The lookup row goes last, in its own
    transaction, and a call for someone no longer a member still removes a leftover one:
    running it again repairs a removal whose second step failed."""
    channel: dict[str, Any] = {}

    async def body(cur: aiomysql.DictCursor, row: dict[str, Any]
                   ) -> tuple[bool, list[Announcement]]:
        if refuse_archived and row["is_archived"]:
            raise Refused("is_archived")
        channel.update(_public_row(row))
        await cur.execute("DELETE FROM channel_members WHERE channel_id=%s AND user_id=%s",
                          (channel_id, user_id))
        if cur.rowcount == 0:
            return False, []
        return True, [(channel_id, lambda ts: events.member_left_channel(row, user_id, ts))]

    was_member = await _change(db, channel_id, body)
    await db.transact(user_id, lambda cur: _unlink_member(cur, channel, user_id, actor))
    return was_member


async def _unlink_member(cur: aiomysql.DictCursor, channel: dict[str, Any], user_id: str,
                         actor: str) -> Posted | None:
    seq, last_ts_us = await lock_stream(cur, user_id)
    await cur.execute("DELETE FROM user_channels WHERE user_id=%s AND channel_id=%s",
                      (user_id, channel["id"]))
    if cur.rowcount == 0:
        return None
    posted, _ = await append_locked(cur, user_id, seq, last_ts_us, lambda ts:
                                    events.channel_left(channel, actor, ts))
    return posted


async def set_archived(db: Database, channel_id: str, archived: bool, actor: str
                       ) -> dict[str, Any]:
    """Archive or unarchive; Refused already_archived / not_archived when it already is."""

    async def body(cur: aiomysql.DictCursor, row: dict[str, Any]
                   ) -> tuple[dict[str, Any], list[Announcement]]:
        if bool(row["is_archived"]) == archived:
            raise Refused("already_archived" if archived else "not_archived")
        updated = ids.now_us() // 1000
        await cur.execute("UPDATE channels SET is_archived=%s, updated=%s WHERE id=%s",
                          (int(archived), updated, channel_id))
        row = {**_public_row(row), "is_archived": int(archived), "updated": updated}
        build = events.channel_archive if archived else events.channel_unarchive
        return row, [(_lifecycle_stream(row), lambda ts: build(row, actor, ts))]

    return await _change(db, channel_id, body)


async def rename_channel(db: Database, channel_id: str, team_id: str, name: str,
                         actor: str) -> dict[str, Any]:
    """Reserve the new name (directory; Conflict when taken), rename the channel (its
    shard, with channel_rename / group_rename, then the channel_name / group_name message
    ``actor`` leaves in it), then free the name it had. A rename that fails frees the new
    name again."""
    claim = {"id": channel_id, "team_id": team_id, "name": name}
    await _reserve_name(db, claim)

    async def body(cur: aiomysql.DictCursor, row: dict[str, Any]
                   ) -> tuple[dict[str, Any], list[Announcement]]:
        previous = json.loads(row["previous_names"] or "[]")
        previous = [n for n in previous if n != row["name"]] + [row["name"]]
        updated = ids.now_us() // 1000
        await cur.execute(
            "UPDATE channels SET name=%s, previous_names=%s, updated=%s WHERE id=%s",
            (name, json.dumps(previous), updated, channel_id))
        renamed = {**_public_row(row), "name": name, "previous_names": json.dumps(previous),
                   "updated": updated, "old_name": row["name"]}
        # the rename event first (a private channel's goes on this same stream), so a client
        # knows the new name by the time the message naming it arrives
        later = await append_here(db, channel_id, cur, [(
            _lifecycle_stream(row), lambda ts: events.channel_rename(renamed, ts))])
        await messages.insert_notice(cur, renamed, actor, channel_notice(
            renamed, actor, "name", name, old_name=row["name"]))
        return renamed, later

    try:
        row = await _change(db, channel_id, body)
    except BaseException:
        await _release_name(db, claim)
        raise
    await _release_name(db, {**claim, "name": row.pop("old_name")})
    return row


async def _release_name(db: Database, row: dict[str, Any]) -> None:
    async def release(cur: aiomysql.DictCursor) -> None:
        await cur.execute(
            "DELETE FROM channel_names WHERE team_id=%s AND name=%s AND channel_id=%s",
            (row["team_id"], row["name"], row["id"]))

    await db.transact_directory(release)


async def set_text(db: Database, channel_id: str, field: str, value: str, actor: str
                   ) -> dict[str, Any]:
    """Set the topic or the purpose (``field``), recording who set it and when. A change
    leaves Slack's channel_topic / channel_purpose message (group_* when private) in the
    channel, in the same transaction: that message is how members hear of it."""
    assert field in ("topic", "purpose")

    async def body(cur: aiomysql.DictCursor, row: dict[str, Any]
                   ) -> tuple[dict[str, Any], list[Announcement]]:
        if row["is_archived"]:
            raise Refused("is_archived")
        now_us = ids.now_us()
        await cur.execute(
            f"UPDATE channels SET {field}=%s, {field}_creator=%s, {field}_last_set=%s, "
            "updated=%s WHERE id=%s",
            (value, actor, now_us // 1_000_000, now_us // 1000, channel_id))
        if row[field] != value:  # setting the same text again changes nothing to announce
            await messages.insert_notice(cur, row, actor,
                                         channel_notice(row, actor, field, value))
        return {**_public_row(row), field: value, f"{field}_creator": actor,
                f"{field}_last_set": now_us // 1_000_000, "updated": now_us // 1000}, []

    return await _change(db, channel_id, body)


# --- read state -----------------------------------------------------------------------------

# what counts as unread: top-level messages and replies broadcast to the channel, not
# thread replies (a parent carries thread_ts equal to its own ts)
_TOP_LEVEL = "(thread_ts_us IS NULL OR thread_ts_us = ts_us OR reply_broadcast = 1)"
# what a client badges: others' messages, and only those with content (no joins, leaves,
# topic changes or tombstones)
_SHOWN = ("user_id <> %s AND (subtype IS NULL OR subtype IN "
          "('me_message', 'bot_message', 'thread_broadcast', 'file_share'))")


async def _unread(cur: aiomysql.DictCursor, channel_id: str, user_id: str, after_us: int
                  ) -> tuple[int, int]:
    await cur.execute(
        f"SELECT COUNT(*) AS n, COALESCE(SUM({_SHOWN}), 0) AS shown FROM messages "
        f"WHERE channel_id=%s AND ts_us > %s AND {_TOP_LEVEL}",
        (user_id, channel_id, after_us))
    row = await cur.fetchone()
    return int(row["n"]), int(row["shown"])


async def unread_counts(db: Database, channel_id: str, user_id: str, after_us: int
                        ) -> tuple[int, int]:
    """(unread_count, unread_count_display) after the read position ``after_us``."""
    async with db.chat(channel_id) as cur:
        return await _unread(cur, channel_id, user_id, after_us)


async def mark_read(db: Database, channel: dict[str, Any], user_id: str, ts_us: int
                    ) -> tuple[int, int]:
    """Move the member's read position (back as well as forward: "mark unread"); the
    member's other sockets learn it by channel_marked (and kin) on the personal stream.
    Refused not_in_channel for a non-member."""
    channel_id = channel["id"]

    async def tx(cur: aiomysql.DictCursor) -> tuple[tuple[int, int], list[Announcement]]:
        await cur.execute(
            "SELECT 1 FROM channel_members WHERE channel_id=%s AND user_id=%s FOR UPDATE",
            (channel_id, user_id))
        if await cur.fetchone() is None:
            raise Refused("not_in_channel")
        await cur.execute(
            "UPDATE channel_members SET last_read_us=%s WHERE channel_id=%s AND user_id=%s",
            (ts_us, channel_id, user_id))
        counts = await _unread(cur, channel_id, user_id, ts_us)
        read = ids.format_ts(ts_us)
        later = await append_here(db, channel_id, cur, [(user_id, lambda ts: (
            events.channel_marked(channel, read, counts[0], counts[1], ts)))])
        return counts, later

    counts, later = await db.transact(channel_id, tx)
    await announce(db, later)
    return counts


async def member_row(db: Database, channel_id: str, user_id: str) -> dict[str, Any] | None:
    """The user's membership (last_read_us, is_open), or None."""
    async with db.chat(channel_id) as cur:
        await cur.execute(
            "SELECT last_read_us, is_open FROM channel_members "
            "WHERE channel_id=%s AND user_id=%s", (channel_id, user_id))
        return await cur.fetchone()


# --- listings -------------------------------------------------------------------------------


async def members_page(db: Database, channel_id: str, after: str, limit: int) -> list[str]:
    """Member ids after ``after`` in id order, ``limit + 1`` of them (to tell if more)."""
    async with db.chat(channel_id) as cur:
        await cur.execute(
            "SELECT user_id FROM channel_members WHERE channel_id=%s AND user_id > %s "
            "ORDER BY user_id LIMIT %s", (channel_id, after, limit + 1))
        return [r["user_id"] for r in await cur.fetchall()]


async def members_of(db: Database, channel_id: str, user_ids: list[str]) -> list[str]:
    """Those of ``user_ids`` who are members of the channel."""
    if not user_ids:
        return []
    async with db.chat(channel_id) as cur:
        marks = ",".join(["%s"] * len(user_ids))
        await cur.execute(
            "SELECT user_id FROM channel_members WHERE channel_id=%s "
            f"AND user_id IN ({marks})", [channel_id, *user_ids])
        return [r["user_id"] for r in await cur.fetchall()]


def _by_shard(db: Database, keys: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(db.shard_of(key), []).append(key)
    return groups


async def member_counts(db: Database, channel_ids: list[str]) -> dict[str, int]:
    """How many members each channel has: one grouped query per shard touched."""

    async def one(group: list[str]) -> list[dict[str, Any]]:
        async with db.chat(group[0]) as cur:
            marks = ",".join(["%s"] * len(group))
            await cur.execute(
                "SELECT channel_id, COUNT(*) AS n FROM channel_members "
                f"WHERE channel_id IN ({marks}) GROUP BY channel_id", group)
            return list(await cur.fetchall())

    counts = dict.fromkeys(channel_ids, 0)
    groups = list(_by_shard(db, channel_ids).values())
    for rows in await asyncio.gather(*(one(g) for g in groups)):
        counts.update({r["channel_id"]: int(r["n"]) for r in rows})
    return counts


async def team_channels(db: Database, team_id: str, after: str, limit: int, *,
                        exclude_archived: bool) -> list[dict[str, Any]]:
    """The workspace's public channels after the id ``after``, in id order: a scatter read
    (index by_team) taking at most ``limit + 1`` from each shard, merged."""
    archived = " AND is_archived=0" if exclude_archived else ""

    async def one(cur: aiomysql.DictCursor) -> list[dict[str, Any]]:
        await cur.execute(
            "SELECT * FROM channels WHERE team_id=%s AND id > %s AND is_private=0"
            f"{archived} ORDER BY id LIMIT %s", (team_id, after, limit + 1))
        return list(await cur.fetchall())

    parts = await asyncio.gather(*(db.transact_shard(s, one) for s in db.shards()))
    rows = [r for part in parts for r in part]
    return sorted(rows, key=lambda r: r["id"])[:limit + 1]


async def rows_as_member(db: Database, channel_ids: list[str], user_id: str,
                         viewer: str | None = None) -> list[dict[str, Any]]:
    """The rows of the channels among ``channel_ids`` that ``user_id`` is a member of, with
    ``viewer``'s membership (by default that user's own): ``viewer_member``, and its
    last_read_us and is_open (NULL when not a member). One query per shard touched."""

    async def one(group: list[str]) -> list[dict[str, Any]]:
        async with db.chat(group[0]) as cur:
            marks = ",".join(["%s"] * len(group))
            await cur.execute(
                "SELECT c.*, v.last_read_us, v.is_open, v.user_id IS NOT NULL AS viewer_member "
                "FROM channels c "
                "JOIN channel_members m ON m.channel_id=c.id AND m.user_id=%s "
                "LEFT JOIN channel_members v ON v.channel_id=c.id AND v.user_id=%s "
                f"WHERE c.id IN ({marks})", [user_id, viewer or user_id, *group])
            return list(await cur.fetchall())

    groups = list(_by_shard(db, channel_ids).values())
    return [r for part in await asyncio.gather(*(one(g) for g in groups)) for r in part]


async def channel_id_by_name(db: Database, team_id: str, name: str) -> str | None:
    async with db.directory() as cur:
        await cur.execute("SELECT channel_id FROM channel_names WHERE team_id=%s AND name=%s",
                          (team_id, name))
        row = await cur.fetchone()
    return row["channel_id"] if row else None
