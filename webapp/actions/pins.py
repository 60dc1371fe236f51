"""Pins: members pin and unpin messages of their channel; anyone who may see the channel
may list its pins."""

from __future__ import annotations

from typing import Any

from webapp import store
from webapp.actions import channels
from webapp.actions.reactions import annotate
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack.shapes import pin_item, row_to_message
from webapp.store import pins as db_pins


async def add(rt: Runtime, who: store.Identity, channel: str, ts_us: int) -> None:
    try:
        await db_pins.add_pin(rt.db, channel, who, ts_us)
    except store.PostRefused as exc:
        raise ApiError(exc.error) from exc


async def remove(rt: Runtime, who: store.Identity, channel: str, ts_us: int) -> None:
    try:
        await db_pins.remove_pin(rt.db, channel, who, ts_us)
    except store.PostRefused as exc:
        raise ApiError(exc.error) from exc


async def list_(rt: Runtime, who: store.Identity, channel: str) -> list[dict[str, Any]]:
    """pins.list's items, newest pin first, each message with its reactions and pins."""
    row = await channels.visible_channel(rt, who, channel)
    rows = await db_pins.pinned(rt.db, channel)
    messages = await annotate(rt, channel, [row_to_message(r, row["team_id"]) for r in rows])
    return [pin_item(msg, channel, r["pin_created"], r["pinned_by"])
            for msg, r in zip(messages, rows, strict=True)]


async def count(rt: Runtime, channel: str) -> int:
    """The channel's pin count (conversations.history's ``pin_count``): one query."""
    return await db_pins.pin_count(rt.db, channel)
