"""Reads and writes of the data model. Every write is a function of a cursor that
:meth:`Database.transact` runs as one single-shard transaction and runs again, whole, after a
deadlock; every write that produces a real-time event goes through :func:`append_event` inside
it, so an event exists (with its seq and ts) exactly when the change it describes is committed.

Lock order: a transaction that writes a stream's rows (channel or personal stream) X-locks
that stream's ``stream_seq`` row first. Every row it then writes is keyed by that stream, so
writers of one stream queue on one lock instead of meeting halfway in opposite order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

import aiomysql

from cluster import ids
from webapp.db import Database

log = logging.getLogger(__name__)

Shape = Callable[[dict[str, Any]], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Posted:
    """An event committed to a stream, waiting to be handed to an admin server."""

    stream: str
    seq: int
    event: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Identity:
    user_id: str
    team_id: str
    user_name: str
    team_name: str
    team_domain: str
    is_bot: bool
    bot_id: str | None


class Conflict(Exception):
    """A uniqueness rule was hit (e.g. a channel name already taken)."""


async def lock_stream(cur: aiomysql.DictCursor, stream: str) -> tuple[int, int]:
    """X-lock the stream's allocator row, creating it if missing; returns (seq, last_ts_us).

    ON DUPLICATE KEY UPDATE takes the exclusive lock at once. The former INSERT IGNORE took a
    shared lock on the existing row, and two transactions holding it both deadlocked when
    SELECT ... FOR UPDATE tried to upgrade it.
    """
    await cur.execute(
        "INSERT INTO stream_seq VALUES (%s, 0, 0) ON DUPLICATE KEY UPDATE seq=seq", (stream,)
    )
    await cur.execute(
        "SELECT seq, last_ts_us FROM stream_seq WHERE stream_id=%s FOR UPDATE", (stream,)
    )
    row = await cur.fetchone()
    return row["seq"], row["last_ts_us"]


async def append_event(
    cur: aiomysql.DictCursor, stream: str, build: Callable[[str], dict[str, Any]]
) -> tuple[Posted, int]:
    """Assign the stream's next seq and ts, store the event; returns it with its ts in µs.

    Must run inside a transaction on the stream's shard: the row lock on stream_seq is what
    makes seq gap-free and ts strictly increasing under concurrent writers.
    """
    seq, last_ts_us = await lock_stream(cur, stream)
    return await _append_locked(cur, stream, seq, last_ts_us, build)


async def _append_locked(
    cur: aiomysql.DictCursor, stream: str, seq: int, last_ts_us: int,
    build: Callable[[str], dict[str, Any]],
) -> tuple[Posted, int]:
    ts_us = ids.next_ts_us(ids.now_us(), last_ts_us)
    event = build(ids.format_ts(ts_us))
    await cur.execute(
        "UPDATE stream_seq SET seq=%s, last_ts_us=%s WHERE stream_id=%s",
        (seq + 1, ts_us, stream),
    )
    await cur.execute(
        "INSERT INTO events (stream_id, seq, ts_us, payload) VALUES (%s, %s, %s, %s)",
        (stream, seq + 1, ts_us, json.dumps(event, separators=(",", ":"))),
    )
    return Posted(stream, seq + 1, event), ts_us


# --- directory -------------------------------------------------------------------------


async def create_team(db: Database, name: str, domain: str) -> dict[str, Any]:
    team = {"id": ids.new_id("T"), "name": name, "domain": domain}

    async def insert(cur: aiomysql.DictCursor) -> None:
        await cur.execute(
            "INSERT INTO teams (id, name, domain, created) VALUES (%s, %s, %s, %s)",
            (team["id"], name, domain, ids.now_us() // 1_000_000),
        )

    await db.transact_directory(insert)
    return team


async def create_user(
    db: Database, team_id: str, name: str, *, is_bot: bool = False
) -> tuple[dict[str, Any], str]:
    """Returns the user and its token; only the token's hash is stored."""
    user = {"id": ids.new_id("U"), "team_id": team_id, "name": name, "is_bot": is_bot,
            "bot_id": ids.new_id("B") if is_bot else None}
    token = ids.new_token("xoxb" if is_bot else "xoxp")
    created = ids.now_us() // 1_000_000

    async def insert(cur: aiomysql.DictCursor) -> None:
        await cur.execute(
            "INSERT INTO users (id, team_id, name, real_name, is_bot, bot_id, created) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (user["id"], team_id, name, name, int(is_bot), user["bot_id"], created),
        )
        await cur.execute(
            "INSERT INTO tokens (token_hash, user_id, team_id, kind, created) "
            "VALUES (%s, %s, %s, %s, %s)",
            (ids.hash_token(token), user["id"], team_id, "bot" if is_bot else "user", created),
        )

    await db.transact_directory(insert)
    return user, token


async def identity_for_token(db: Database, token: str) -> Identity | None:
    async with db.directory() as cur:
        await cur.execute(
            "SELECT u.id, u.team_id, u.name, u.is_bot, u.bot_id, t.name AS team_name, "
            "t.domain FROM tokens k JOIN users u ON u.id = k.user_id "
            "JOIN teams t ON t.id = u.team_id WHERE k.token_hash=%s",
            (ids.hash_token(token),),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return Identity(row["id"], row["team_id"], row["name"], row["team_name"], row["domain"],
                    bool(row["is_bot"]), row["bot_id"])


async def user_exists(db: Database, team_id: str, user_id: str) -> bool:
    async with db.directory() as cur:
        await cur.execute("SELECT 1 FROM users WHERE id=%s AND team_id=%s", (user_id, team_id))
        return await cur.fetchone() is not None


# --- channels --------------------------------------------------------------------------


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
    posted, _ = await _append_locked(cur, channel_id, seq, last_ts_us, lambda ts: {
        "type": "member_joined_channel", "user": user_id, "channel": channel_id,
        "channel_type": "G" if channel["is_private"] else "C", "team": channel["team_id"],
        "event_ts": ts,
    })
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
    kind = "group_joined" if channel["is_private"] else "channel_joined"
    def build(ts: str) -> dict[str, Any]:
        event = {"type": kind, "channel": shape(channel), "event_ts": ts}
        return event if at is None else {**event, "_at": at}

    posted, _ = await _append_locked(cur, user_id, seq, last_ts_us, build)
    return posted


# --- messages --------------------------------------------------------------------------


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

        posted, ts_us = await _append_locked(cur, channel_id, row["seq"], row["last_ts_us"],
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


def message_shape(
    who: Identity, text: str, ts: str, thread_ts_us: int | None, client_msg_id: str | None
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "message", "user": who.user_id, "text": text, "ts": ts,
                           "team": who.team_id}
    if who.bot_id:
        msg["bot_id"] = who.bot_id
    if client_msg_id:
        msg["client_msg_id"] = client_msg_id
    if thread_ts_us is not None:
        msg["thread_ts"] = ids.format_ts(thread_ts_us)
    return msg


def row_to_message(row: dict[str, Any], team_id: str) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "message", "user": row["user_id"], "text": row["text"],
                           "ts": ids.format_ts(row["ts_us"]), "team": team_id}
    if row["bot_id"]:
        msg["bot_id"] = row["bot_id"]
    if row["client_msg_id"]:
        msg["client_msg_id"] = row["client_msg_id"]
    if row["thread_ts_us"] is not None:
        msg["thread_ts"] = ids.format_ts(row["thread_ts_us"])
    return msg


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


async def events_after(db: Database, stream: str, after_seq: int, limit: int) -> list[dict]:
    async with db.chat(stream) as cur:
        await cur.execute(
            "SELECT seq, payload FROM events WHERE stream_id=%s AND seq>%s "
            "ORDER BY seq LIMIT %s", (stream, after_seq, limit),
        )
        return [{"seq": r["seq"], "event": json.loads(r["payload"])}
                for r in await cur.fetchall()]


async def stream_heads(db: Database, streams: list[str]) -> dict[str, int]:
    """The last committed seq of each stream (0 for a stream with no events yet): one query
    per shard touched, so a channel server learns the positions of many streams at once."""
    by_shard: dict[str, list[str]] = {}
    for stream in streams:
        by_shard.setdefault(db.shard_of(stream), []).append(stream)
    heads = dict.fromkeys(streams, 0)
    for group in by_shard.values():
        async with db.chat(group[0]) as cur:
            marks = ",".join(["%s"] * len(group))
            await cur.execute(
                f"SELECT stream_id, seq FROM stream_seq WHERE stream_id IN ({marks})", group)
            for row in await cur.fetchall():
                heads[row["stream_id"]] = int(row["seq"])
    return heads


async def oldest_events(db: Database, streams: list[str]) -> dict[str, int]:
    """The oldest seq still in the event log of each stream that has any (the retention
    purge removes older ones): a resume from before it cannot be served."""
    by_shard: dict[str, list[str]] = {}
    for stream in streams:
        by_shard.setdefault(db.shard_of(stream), []).append(stream)
    oldest: dict[str, int] = {}
    for group in by_shard.values():
        async with db.chat(group[0]) as cur:
            marks = ",".join(["%s"] * len(group))
            await cur.execute(
                f"SELECT stream_id, MIN(seq) AS seq FROM events WHERE stream_id IN ({marks}) "
                "GROUP BY stream_id", group)
            for row in await cur.fetchall():
                oldest[row["stream_id"]] = int(row["seq"])
    return oldest


async def purge_events(db: Database, before_us: int, batch: int = 5000) -> int:
    """Delete event-log rows older than ``before_us`` on every shard, in small batches so no
    transaction holds many locks; returns how many went. Messages stay (history reads
    them); only resume and gap repair read the log."""
    total = 0
    for shard in db.shards():
        while True:
            async def purge(cur: aiomysql.DictCursor) -> int:
                await cur.execute("DELETE FROM events WHERE ts_us < %s LIMIT %s",
                                  (before_us, batch))
                return int(cur.rowcount)

            gone = await db.transact_shard(shard, purge)
            total += gone
            if gone < batch:
                break
    return total
