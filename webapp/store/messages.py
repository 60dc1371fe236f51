"""SQL of messages: posts (with their thread), edits, deletes, history and thread reads.

Every write locks the channel's stream first (webapp/store/streams.py), so writers of one
channel are serialised and the plain reads that follow the lock see every earlier commit.
A reply updates its parent's reply summary in the same transaction: a thread lives on its
channel's shard.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import aiomysql

from cluster import ids
from webapp.db import Database, TxCursor
from webapp.slack import events
from webapp.slack.shapes import TOMBSTONE_TEXT, TOMBSTONE_USER, row_to_message
from webapp.store.directory import Identity
from webapp.store.streams import Posted, append_locked, lock_stream

# subtypes a person may edit; system messages and tombstones stay as they are
EDITABLE = (None, "me_message", "thread_broadcast")


class PostRefused(Exception):
    """A write the caller may not make, with Slack's error code."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclasses.dataclass
class Position:
    """The locked stream's position, advanced by each event a transaction appends."""

    stream: str
    seq: int
    last_ts_us: int

    async def append(self, cur: TxCursor,
                     build: Callable[[str], dict[str, Any]]) -> tuple[Posted, int]:
        posted, ts_us = await append_locked(cur, self.stream, self.seq, self.last_ts_us, build)
        self.seq, self.last_ts_us = posted.seq, ts_us
        return posted, ts_us


def _json(value: list[Any] | None) -> str | None:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False) if value else None


# --- posting -------------------------------------------------------------------------------


async def post_message(
    db: Database, channel_id: str, who: Identity, text: str,
    thread_ts_us: int | None, client_msg_id: str | None, *,
    subtype: str | None = None, blocks: list[Any] | None = None,
    attachments: list[Any] | None = None, broadcast: bool = False,
) -> tuple[Posted | None, dict[str, Any]]:
    """One single-shard transaction: check, allocate seq+ts, insert the message and its
    event; a reply also updates its parent and announces it (message_replied).

    A ``client_msg_id`` this user already posted in this channel returns that message and
    no event (None): the attempt that committed it also committed its event, which reaches
    the channel even if that attempt died before notifying (channel servers' head checks).
    """
    row = {"channel_id": channel_id, "user_id": who.user_id, "bot_id": who.bot_id,
           "text": text, "client_msg_id": client_msg_id, "subtype": subtype,
           "blocks": _json(blocks), "attachments": _json(attachments),
           "thread_ts_us": None, "reply_broadcast": 0, "parent_user_id": None}

    async def post(cur: TxCursor) -> tuple[Posted, dict[str, Any]] | dict[str, Any]:
        # one round trip: BEGIN, the lock, and the reads the post needs. They run in this
        # order, so the client_msg_id lookup runs under the stream lock: posts to the
        # channel are serialised, and an earlier attempt with this id has either committed
        # (and is found) or has not begun
        reads = [_lock_query(channel_id, who)]
        if client_msg_id is not None:
            reads.append(_client_id_query(channel_id, who.user_id, client_msg_id))
        if thread_ts_us is not None:
            reads.append(_message_query(channel_id, thread_ts_us))
        found = await cur.select_many(reads)
        pos = _may_post(_locked(found[0], channel_id, who))
        if client_msg_id is not None and found[1]:
            return found[1][0]
        if thread_ts_us is None:
            return await _insert(cur, pos, dict(row), who.team_id)
        parent = await _thread_parent(cur, channel_id, found[-1][0] if found[-1] else None)
        return await _insert_reply(cur, pos, dict(row), parent, broadcast, who.team_id)

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
    return done


async def _insert(cur: TxCursor, pos: Position, row: dict[str, Any],
                  team_id: str, root: Callable[[int], dict[str, Any]] | None = None,
                  ) -> tuple[Posted, dict[str, Any]]:
    """Append the message's event and insert its row; ``root(ts_us)`` gives a broadcast
    reply's parent as it stands once this reply is counted."""

    def build(ts: str) -> dict[str, Any]:
        row["ts_us"] = ids.parse_ts(ts)
        parent = root(row["ts_us"]) if root is not None else None
        return events.message(row_to_message(row, team_id), row["channel_id"], ts, parent)

    posted, ts_us = await pos.append(cur, build)
    row["seq"] = posted.seq
    cur.defer(
        "INSERT INTO messages (channel_id, ts_us, seq, user_id, bot_id, text, thread_ts_us, "
        "client_msg_id, subtype, blocks, attachments, reply_broadcast, parent_user_id, extra) "
        "VALUES (%(channel_id)s, %(ts_us)s, %(seq)s, %(user_id)s, %(bot_id)s, %(text)s, "
        "%(thread_ts_us)s, %(client_msg_id)s, %(subtype)s, %(blocks)s, %(attachments)s, "
        "%(reply_broadcast)s, %(parent_user_id)s, %(extra)s)", {"extra": None, **row},
    )
    return posted, row_to_message(row, team_id)


async def _insert_reply(
    cur: TxCursor, pos: Position, row: dict[str, Any], parent: dict[str, Any],
    broadcast: bool, team_id: str,
) -> tuple[Posted, dict[str, Any]]:
    """The reply, its parent's new summary, and message_replied carrying that parent."""
    row |= {"thread_ts_us": parent["ts_us"], "parent_user_id": parent["user_id"],
            "reply_broadcast": int(broadcast)}
    if broadcast:
        row["subtype"] = "thread_broadcast"
    users = json.loads(parent["reply_users"] or "[]")
    if row["user_id"] not in users:
        users.append(row["user_id"])
    updated = dict(parent)

    def counted(ts_us: int) -> dict[str, Any]:
        updated.update(reply_count=parent["reply_count"] + 1, latest_reply_us=ts_us,
                       reply_users=json.dumps(users))
        return row_to_message(updated, team_id)

    posted, message = await _insert(cur, pos, row, team_id, counted if broadcast else None)
    shown = counted(row["ts_us"])
    cur.defer(
        "UPDATE messages SET reply_count=%s, latest_reply_us=%s, reply_users=%s "
        "WHERE channel_id=%s AND ts_us=%s",
        (updated["reply_count"], updated["latest_reply_us"], updated["reply_users"],
         parent["channel_id"], parent["ts_us"]),
    )
    await pos.append(cur, lambda ts: events.message_replied(shown, parent["channel_id"], ts))
    return posted, message


async def insert_notice(cur: TxCursor, channel: dict[str, Any], user_id: str,
                        notice: tuple[str, str, dict[str, Any]]) -> Posted:
    """A system message (``notice``: subtype, text, its own fields; see
    shapes.channel_notice) stored and announced like any post, with the stream's next seq
    and ts, inside the caller's transaction on the channel's shard."""
    subtype, text, extra = notice
    seq, last_ts_us = await lock_stream(cur, channel["id"])
    row = {"channel_id": channel["id"], "user_id": user_id, "bot_id": None, "text": text,
           "client_msg_id": None, "subtype": subtype, "blocks": None, "attachments": None,
           "thread_ts_us": None, "reply_broadcast": 0, "parent_user_id": None,
           "extra": json.dumps(extra, separators=(",", ":"), ensure_ascii=False)}
    posted, _ = await _insert(cur, Position(channel["id"], seq, last_ts_us), row,
                              channel["team_id"])
    return posted


async def _thread_parent(cur: TxCursor, channel_id: str,
                         found: dict[str, Any] | None) -> dict[str, Any]:
    """The message a reply goes under: ``thread_ts`` itself (``found``, read with the
    lock), or, when that is a reply, its parent (Slack threads one level deep)."""
    parent = found
    if parent is not None and parent["thread_ts_us"] is not None:
        parent = await message_row(cur, channel_id, parent["thread_ts_us"])
    if parent is None:
        raise PostRefused("thread_not_found")
    return parent


def _client_id_query(channel_id: str, user_id: str, client_msg_id: str) -> tuple[str, Any]:
    """A plain read, sent after the stream lock: a locking read would gap-lock the unique
    index, and two posts to different channels whose keys share a gap would then deadlock
    on their inserts."""
    return ("SELECT * FROM messages WHERE channel_id=%s AND user_id=%s AND client_msg_id=%s",
            (channel_id, user_id, client_msg_id))


def _message_query(channel_id: str, ts_us: int) -> tuple[str, Any]:
    return "SELECT * FROM messages WHERE channel_id=%s AND ts_us=%s", (channel_id, ts_us)


def _lock_query(channel_id: str, who: Identity) -> tuple[str, Any]:
    return ("SELECT c.team_id, c.is_private, c.is_im, c.is_mpim, c.is_archived, s.seq, "
            "s.last_ts_us, "
            "EXISTS(SELECT 1 FROM channel_members m WHERE m.channel_id=c.id "
            "AND m.user_id=%s) AS member FROM channels c "
            "JOIN stream_seq s ON s.stream_id=c.id WHERE c.id=%s FOR UPDATE",
            (who.user_id, channel_id))


def _locked(rows: list[dict[str, Any]], channel_id: str,
            who: Identity) -> tuple[Position, dict[str, Any]]:
    """The lock query's answer: the position and channel row, or channel_not_found
    (private channels hide from non-members)."""
    row = rows[0] if rows else None
    if row is None or row["team_id"] != who.team_id or (
        _members_only(row) and not row["member"]
    ):
        raise PostRefused("channel_not_found")
    return Position(channel_id, row["seq"], row["last_ts_us"]), row


async def lock_channel(cur: aiomysql.DictCursor, channel_id: str,
                        who: Identity) -> tuple[Position, dict[str, Any]]:
    """Lock the channel's stream; the channel row (with ``member``: the caller's) if the
    caller may see it, else channel_not_found (private channels hide from non-members)."""
    await cur.execute(*_lock_query(channel_id, who))
    return _locked(list(await cur.fetchall()), channel_id, who)


def _members_only(row: dict[str, Any]) -> bool:
    return bool(row["is_private"] or row.get("is_im") or row.get("is_mpim"))


def _may_post(locked: tuple[Position, dict[str, Any]]) -> Position:
    """The locked channel takes posts from this member; raises PostRefused."""
    pos, row = locked
    if row["is_archived"]:
        raise PostRefused("is_archived")
    if not row["member"]:
        raise PostRefused("not_in_channel")
    return pos


async def message_row(cur: aiomysql.DictCursor, channel_id: str,
                       ts_us: int) -> dict[str, Any] | None:
    await cur.execute("SELECT * FROM messages WHERE channel_id=%s AND ts_us=%s",
                      (channel_id, ts_us))
    return await cur.fetchone()


# --- edits and deletes ---------------------------------------------------------------------


async def _lock_message(cur: aiomysql.DictCursor, channel_id: str, who: Identity, ts_us: int,
                        refused: str) -> tuple[Position, dict[str, Any]]:
    """Lock the stream and find a message ``who`` may change (its author, or a workspace
    admin): message_not_found, or ``refused`` when it is someone else's (or, for an edit,
    not a person's message)."""
    pos, channel = await lock_channel(cur, channel_id, who)
    if channel["is_archived"]:
        raise PostRefused("is_archived")
    row = await message_row(cur, channel_id, ts_us)
    if row is None or row["subtype"] == "tombstone":
        raise PostRefused("message_not_found")
    if row["user_id"] != who.user_id and not who.is_admin:
        raise PostRefused(refused)
    if refused == "cant_update_message" and row["subtype"] not in EDITABLE:
        raise PostRefused(refused)
    return pos, row


async def update_message(
    db: Database, channel_id: str, who: Identity, ts_us: int, text: str | None,
    blocks: list[Any] | None, attachments: list[Any] | None,
) -> dict[str, Any]:
    """Edit a message: None keeps a part, an empty list removes blocks or attachments (as
    Slack's chat.update). Emits message_changed; returns the message as it now is."""

    async def update(cur: aiomysql.DictCursor) -> dict[str, Any]:
        pos, row = await _lock_message(cur, channel_id, who, ts_us, "cant_update_message")
        new = dict(row, edited_by=who.user_id)
        if text is not None:
            new["text"] = text
        if blocks is not None:
            new["blocks"] = _json(blocks)
        if attachments is not None:
            new["attachments"] = _json(attachments)
        previous = row_to_message(row, who.team_id)

        def build(ts: str) -> dict[str, Any]:
            new["edited_ts_us"] = ids.parse_ts(ts)
            return events.message_changed(row_to_message(new, who.team_id), previous,
                                          channel_id, ts)

        await pos.append(cur, build)
        await cur.execute(
            "UPDATE messages SET text=%(text)s, blocks=%(blocks)s, attachments=%(attachments)s, "
            "edited_by=%(edited_by)s, edited_ts_us=%(edited_ts_us)s "
            "WHERE channel_id=%(channel_id)s AND ts_us=%(ts_us)s", new,
        )
        return row_to_message(new, who.team_id)

    return await db.transact(channel_id, update)


async def delete_message(db: Database, channel_id: str, who: Identity, ts_us: int) -> None:
    """Delete a message (message_deleted). A thread parent with replies becomes a tombstone
    instead (message_changed); a deleted reply shrinks its parent's summary, and takes a
    tombstone whose last reply it was with it."""

    async def delete(cur: aiomysql.DictCursor) -> None:
        pos, row = await _lock_message(cur, channel_id, who, ts_us, "cant_delete_message")
        # its reactions and pins go with it, tombstone or not (reactions.*, pins.*)
        for table in ("reactions", "pins"):
            await cur.execute(f"DELETE FROM {table} WHERE channel_id=%s AND ts_us=%s",
                              (channel_id, ts_us))
        if row["thread_ts_us"] is None and row["reply_count"]:
            await _tombstone(cur, pos, row, who.team_id)
            return
        await _remove(cur, pos, row, who.team_id)
        if row["thread_ts_us"] is not None:
            await _recount(cur, pos, row["thread_ts_us"], who.team_id)

    await db.transact(channel_id, delete)


async def _remove(cur: aiomysql.DictCursor, pos: Position, row: dict[str, Any],
                  team_id: str) -> None:
    previous = row_to_message(row, team_id)
    await pos.append(cur, lambda ts: events.message_deleted(previous, row["channel_id"], ts))
    await cur.execute("DELETE FROM messages WHERE channel_id=%s AND ts_us=%s",
                      (row["channel_id"], row["ts_us"]))


async def _tombstone(cur: aiomysql.DictCursor, pos: Position, row: dict[str, Any],
                     team_id: str) -> None:
    """What Slack leaves of a deleted parent: its replies stay reachable under it."""
    tomb = dict(row, subtype="tombstone", user_id=TOMBSTONE_USER, text=TOMBSTONE_TEXT,
                bot_id=None, client_msg_id=None, blocks=None, attachments=None,
                edited_by=None, edited_ts_us=None)
    await _replace(cur, pos, row, tomb, team_id)


async def _replace(cur: aiomysql.DictCursor, pos: Position, row: dict[str, Any],
                   new: dict[str, Any], team_id: str) -> None:
    """Store ``new`` over ``row`` (same message) and announce it as message_changed."""
    previous, shown = row_to_message(row, team_id), row_to_message(new, team_id)
    await pos.append(cur, lambda ts: events.message_changed(shown, previous,
                                                            row["channel_id"], ts))
    await cur.execute(
        "UPDATE messages SET subtype=%(subtype)s, user_id=%(user_id)s, text=%(text)s, "
        "bot_id=%(bot_id)s, client_msg_id=%(client_msg_id)s, blocks=%(blocks)s, "
        "attachments=%(attachments)s, edited_by=%(edited_by)s, edited_ts_us=%(edited_ts_us)s, "
        "reply_count=%(reply_count)s, reply_users=%(reply_users)s, "
        "latest_reply_us=%(latest_reply_us)s WHERE channel_id=%(channel_id)s "
        "AND ts_us=%(ts_us)s", new,
    )


async def _recount(cur: aiomysql.DictCursor, pos: Position, parent_ts_us: int,
                   team_id: str) -> None:
    """A reply went: the parent's summary again from the replies left (deletes are rare;
    the by_thread index reads just this thread)."""
    parent = await message_row(cur, pos.stream, parent_ts_us)
    if parent is None:
        return
    await cur.execute(
        "SELECT user_id, MIN(ts_us) AS first, MAX(ts_us) AS last, COUNT(*) AS n "
        "FROM messages WHERE channel_id=%s AND thread_ts_us=%s GROUP BY user_id "
        "ORDER BY first", (pos.stream, parent_ts_us),
    )
    repliers = list(await cur.fetchall())
    if not repliers and parent["subtype"] == "tombstone":
        await _remove(cur, pos, parent, team_id)
        return
    new = dict(parent, reply_count=sum(int(r["n"]) for r in repliers),
               reply_users=json.dumps([r["user_id"] for r in repliers]) if repliers else None,
               latest_reply_us=max((r["last"] for r in repliers), default=None))
    await _replace(cur, pos, parent, new, team_id)


# --- reads ---------------------------------------------------------------------------------


async def get_message(db: Database, channel_id: str, ts_us: int) -> dict[str, Any] | None:
    async with db.chat(channel_id) as cur:
        return await message_row(cur, channel_id, ts_us)


async def history(
    db: Database, channel_id: str, *, latest_us: int | None, oldest_us: int,
    latest_inclusive: bool, oldest_inclusive: bool, limit: int,
) -> list[dict[str, Any]]:
    """Newest first, ``limit + 1`` rows so the caller can tell whether there is more.
    Thread replies live in their thread (conversations.replies) unless broadcast."""
    hi_op = "<=" if latest_inclusive else "<"
    lo_op = ">=" if oldest_inclusive else ">"
    latest = latest_us if latest_us is not None else 2**62
    async with db.chat(channel_id) as cur:
        await cur.execute(
            f"SELECT * FROM messages WHERE channel_id=%s AND ts_us {hi_op} %s "
            f"AND ts_us {lo_op} %s AND (thread_ts_us IS NULL OR reply_broadcast=1) "
            "ORDER BY ts_us DESC LIMIT %s",
            (channel_id, latest, oldest_us, limit + 1),
        )
        return list(await cur.fetchall())


async def thread(
    db: Database, channel_id: str, ts_us: int, *, after_us: int | None,
    latest_us: int | None, oldest_us: int | None, inclusive: bool, limit: int,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the thread's parent, up to ``limit + 1`` of its replies oldest first, after
    ``after_us`` and within [oldest, latest]). ``ts_us`` may name the parent or any reply;
    (None, []) when it names no message."""
    lo_op, hi_op = (">=", "<=") if inclusive else (">", "<")
    async with db.chat(channel_id) as cur:
        parent = await message_row(cur, channel_id, ts_us)
        if parent is not None and parent["thread_ts_us"] is not None:
            parent = await message_row(cur, channel_id, parent["thread_ts_us"])
        if parent is None:
            return None, []
        await cur.execute(
            f"SELECT * FROM messages WHERE channel_id=%s AND thread_ts_us=%s AND ts_us > %s "
            f"AND ts_us {lo_op} %s AND ts_us {hi_op} %s ORDER BY ts_us LIMIT %s",
            (channel_id, parent["ts_us"], after_us if after_us is not None else -1,
             oldest_us if oldest_us is not None else -1,
             latest_us if latest_us is not None else 2**62, limit + 1),
        )
        return parent, list(await cur.fetchall())
