"""Reactions: who may react where (a member of the channel, not archived), emoji names, and
reading messages with their reactions and pins (history, threads, reactions.*, pins.*)."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import Any

from cluster import ids
from webapp import store
from webapp.actions import channels
from webapp.api.args import CHANNEL_ID_RE, make_cursor
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack.shapes import row_to_message, with_extras
from webapp.store import dms as db_dms
from webapp.store import messages as store_messages
from webapp.store import reactions as db_reactions

# an emoji name: Slack's are lower-case letters, digits, "_", "+" and "-" (custom ones too),
# with an optional skin tone (2 to 6) after "::"
EMOJI_RE = re.compile(r"^[a-z0-9_+\-]{1,100}(::skin-tone-[2-6])?$")
# reactions.list's cursor prefix
CURSOR = "reacted"


def emoji_name(value: Any) -> str:
    """reactions.*'s ``name``: invalid_name when absent or not an emoji name. ``:smile:`` is
    taken as ``smile``, since clients often send the colons."""
    if value is None or value == "":
        raise ApiError("invalid_name")
    if not isinstance(value, str):
        raise ApiError("invalid_arguments")
    if len(value) > 2 and value.startswith(":") and value.endswith(":"):
        value = value[1:-1]
    if not EMOJI_RE.match(value):
        raise ApiError("invalid_name")
    return value


def _refused(exc: store.PostRefused) -> ApiError:
    return ApiError(exc.error)


async def add(rt: Runtime, who: store.Identity, channel: str, ts_us: int, name: str) -> None:
    try:
        await db_reactions.add_reaction(rt.db, channel, who, ts_us, name)
    except store.PostRefused as exc:
        raise _refused(exc) from exc


async def remove(rt: Runtime, who: store.Identity, channel: str, ts_us: int,
                 name: str) -> None:
    try:
        await db_reactions.remove_reaction(rt.db, channel, who, ts_us, name)
    except store.PostRefused as exc:
        raise _refused(exc) from exc


# --- reads ---------------------------------------------------------------------------------


async def annotate(rt: Runtime, channel_id: str, messages: list[dict[str, Any]],
                   full: bool = False) -> list[dict[str, Any]]:
    """Add their reactions and pins to messages (Slack shapes) of one channel, in place: one
    query for the whole page."""
    found = await db_reactions.extras(rt.db, channel_id, [_ts_us(m) for m in messages])
    for msg in messages:
        ts_us = _ts_us(msg)
        with_extras(msg, found.reactions.get(ts_us), channel_id if ts_us in found.pins
                    else None, full)
    return messages


def _ts_us(msg: dict[str, Any]) -> int:
    return ids.parse_ts(msg["ts"])


async def get(rt: Runtime, who: store.Identity, channel: str, ts_us: int,
              full: bool) -> dict[str, Any]:
    """reactions.get: a message the caller may see, with all its reactions."""
    row = await channels.visible_channel(rt, who, channel)
    message = await store_messages.get_message(rt.db, channel, ts_us)
    if message is None or message["subtype"] == "tombstone":
        raise ApiError("message_not_found")
    shaped = await annotate(rt, channel, [row_to_message(message, row["team_id"])], full)
    return {"type": "message", "channel": channel, "message": shaped[0]}


async def reactor(rt: Runtime, who: store.Identity, user: str | None) -> str:
    """Whose reactions reactions.list lists: the caller's, or a user of the workspace."""
    if user is None or user == who.user_id:
        return who.user_id
    if user not in await db_dms.team_users(rt.db, who.team_id, [user]):
        raise ApiError("user_not_found")
    return user


async def list_reacted(rt: Runtime, who: store.Identity, user: str, full: bool, size: int,
                       page: int, after: str | None) -> dict[str, Any]:
    """reactions.list: ``size`` items after the cursor ``after``, or else page ``page``
    (with Slack's ``paging``); a next cursor whenever more follow, so cursor clients and
    slack_sdk's iteration work from the first page on."""
    before, skip = (_key(after), 0) if after is not None else (
        db_reactions.START, (page - 1) * size)
    keys = await db_reactions.reacted(rt.db, user, who, before, skip, size + 1)
    more = keys[size] if len(keys) > size else None
    reply: dict[str, Any] = {
        "items": await reacted_items(rt, who, keys[:size], full),
        "response_metadata": {"next_cursor": _cursor(keys[size - 1]) if more else ""}}
    if after is None:
        total = await db_reactions.count_reacted(rt.db, user, who)
        reply["paging"] = {"count": size, "total": total, "page": page,
                           "pages": -(-total // size)}
    return reply


def _cursor(key: db_reactions.Key) -> str:
    return make_cursor(CURSOR, ",".join(str(part) for part in key))


def _key(value: str) -> db_reactions.Key:
    parts = value.split(",")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit() \
            or not CHANNEL_ID_RE.match(parts[1]):
        raise ApiError("invalid_cursor")
    return int(parts[0]), parts[1], int(parts[2])


async def reacted_items(rt: Runtime, who: store.Identity, keys: list[db_reactions.Key],
                        full: bool) -> list[dict[str, Any]]:
    """reactions.list's items for ``keys``, in their order: each message with its
    reactions. Two queries per channel on the page, read concurrently."""
    by_channel: dict[str, list[int]] = defaultdict(list)
    for _, channel, ts_us in keys:
        by_channel[channel].append(ts_us)
    reads = await asyncio.gather(*(db_reactions.message_rows(rt.db, c, ts)
                                   for c, ts in by_channel.items()))
    shaped: dict[tuple[str, int], dict[str, Any]] = {}
    for channel, (rows, found) in zip(by_channel, reads, strict=True):
        for row in rows:
            msg = with_extras(row_to_message(row, who.team_id), found.reactions.get(
                row["ts_us"]), channel if row["ts_us"] in found.pins else None, full)
            shaped[(channel, row["ts_us"])] = msg
    # a message deleted between the two reads is left out
    return [{"type": "message", "channel": c, "message": shaped[(c, t)]}
            for _, c, t in keys if (c, t) in shaped]
