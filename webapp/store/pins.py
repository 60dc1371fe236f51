"""SQL of pins: a message pinned to its channel, on the channel's shard. Changes lock the
channel's stream first and append pin_added / pin_removed in the same transaction."""

from __future__ import annotations

from typing import Any

import aiomysql

from cluster import ids
from webapp.db import Database
from webapp.slack import events
from webapp.slack.shapes import pin_item, row_to_message, with_extras
from webapp.store.directory import Identity
from webapp.store.messages import PostRefused
from webapp.store.reactions import extras_in, lock_message

# what Slack will not pin: channel join and leave messages
NOT_PINNABLE = ("channel_join", "channel_leave", "group_join", "group_leave")


async def _pin_row(cur: aiomysql.DictCursor, channel_id: str,
                   ts_us: int) -> dict[str, Any] | None:
    await cur.execute("SELECT pinned_by, created FROM pins WHERE channel_id=%s AND ts_us=%s",
                      (channel_id, ts_us))
    return await cur.fetchone()


async def _shown(cur: aiomysql.DictCursor, row: dict[str, Any], team_id: str,
                 pinned: bool) -> dict[str, Any]:
    """The message as the pin events carry it: with its reactions, pinned or not."""
    found = await extras_in(cur, row["channel_id"], [row["ts_us"]])
    return with_extras(row_to_message(row, team_id), found.reactions.get(row["ts_us"]),
                       row["channel_id"] if pinned else None)


async def add_pin(db: Database, channel_id: str, who: Identity, ts_us: int) -> None:
    """One transaction on the channel's shard: check, append pin_added, insert. The pin's
    ``created`` is its event's ts."""

    async def add(cur: aiomysql.DictCursor) -> None:
        pos, row = await lock_message(cur, channel_id, who, ts_us)
        if row["subtype"] in NOT_PINNABLE:
            raise PostRefused("not_pinnable")
        if await _pin_row(cur, channel_id, ts_us) is not None:
            raise PostRefused("already_pinned")
        msg = await _shown(cur, row, who.team_id, True)
        _, created = await pos.append(cur, lambda ts: events.pin_added(
            who.user_id, channel_id, pin_item(msg, channel_id, ids.parse_ts(ts), who.user_id), ts))
        await cur.execute(
            "INSERT INTO pins (channel_id, ts_us, pinned_by, created) VALUES (%s, %s, %s, %s)",
            (channel_id, ts_us, who.user_id, created))

    await db.transact(channel_id, add)


async def remove_pin(db: Database, channel_id: str, who: Identity, ts_us: int) -> None:
    """Any member may unpin (Slack's default): no_pin when the message is not pinned."""

    async def remove(cur: aiomysql.DictCursor) -> None:
        pos, row = await lock_message(cur, channel_id, who, ts_us)
        pin = await _pin_row(cur, channel_id, ts_us)
        if pin is None:
            raise PostRefused("no_pin")
        await cur.execute("DELETE FROM pins WHERE channel_id=%s AND ts_us=%s",
                          (channel_id, ts_us))
        left = await pin_count_in(cur, channel_id)
        msg = await _shown(cur, row, who.team_id, False)
        item = pin_item(msg, channel_id, pin["created"], pin["pinned_by"])
        await pos.append(cur, lambda ts: events.pin_removed(who.user_id, channel_id, item,
                                                            left > 0, ts))

    await db.transact(channel_id, remove)


# --- reads ---------------------------------------------------------------------------------


async def pin_count_in(cur: aiomysql.DictCursor, channel_id: str) -> int:
    await cur.execute("SELECT COUNT(*) AS n FROM pins WHERE channel_id=%s", (channel_id,))
    return int((await cur.fetchone())["n"])


async def pin_count(db: Database, channel_id: str) -> int:
    async with db.chat(channel_id) as cur:
        return await pin_count_in(cur, channel_id)


async def pinned(db: Database, channel_id: str) -> list[dict[str, Any]]:
    """The channel's pinned messages, newest pin first, each with ``pinned_by`` and
    ``pin_created``; one query (index by_created)."""
    async with db.chat(channel_id) as cur:
        await cur.execute(
            "SELECT m.*, p.pinned_by, p.created AS pin_created FROM pins p "
            "JOIN messages m ON m.channel_id=p.channel_id AND m.ts_us=p.ts_us "
            "WHERE p.channel_id=%s ORDER BY p.created DESC", (channel_id,))
        return list(await cur.fetchall())
