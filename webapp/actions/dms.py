"""DMs and group DMs: opened by their member set (the same set always gives the same
conversation), created when new, closed and reopened in a member's sidebar."""

from __future__ import annotations

from typing import Any

from cluster import ids
from webapp import store
from webapp.actions.channels import is_dm, visible_channel
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.store import channels as db_channels
from webapp.store import dms as db_dms

# a group DM holds up to 9 people: the caller and 8 others
MAX_OTHERS = 8


async def open_by_channel(rt: Runtime, who: store.Identity, channel_id: str
                          ) -> tuple[dict[str, Any], bool]:
    """Reopen a DM or group DM the caller is in: (its row, whether it was already open)."""
    row = await visible_channel(rt, who, channel_id)
    if not is_dm(row):
        raise ApiError("method_not_supported_for_channel_type")
    return row, not await _set_open(rt, who, row, True)


async def open_by_users(rt: Runtime, who: store.Identity, users: list[str],
                        prevent_creation: bool) -> tuple[dict[str, Any] | None, bool]:
    """The DM (one other user) or group DM (2 to 8 others) of the caller with ``users``,
    created unless ``prevent_creation``: (its row or None, whether it was already open).
    Listing only yourself opens the DM with yourself."""
    others = [u for u in users if u != who.user_id]
    if len(others) > MAX_OTHERS:
        raise ApiError("too_many_users")
    known = await db_dms.team_users(rt.db, who.team_id, [who.user_id, *others])
    for user in others:
        if user not in known:
            raise ApiError("user_not_found")
        if known[user]["deleted"]:
            raise ApiError("user_disabled")
    members = [who.user_id, *others]
    row, created = await _find_or_create(rt, who, members, known, prevent_creation)
    if row is None or created:
        return row, False
    return row, not await _set_open(rt, who, row, True)


async def dm_with(rt: Runtime, who: store.Identity, user: str) -> str:
    """The id of the caller's DM with ``user``, created if need be (chat.postMessage to a
    user id); channel_not_found for a user outside the workspace."""
    known = await db_dms.team_users(rt.db, who.team_id, sorted({who.user_id, user}))
    if user not in known or known[user]["deleted"]:
        raise ApiError("channel_not_found")
    row, _ = await _find_or_create(rt, who, [who.user_id, user], known, False)
    assert row is not None
    return str(row["id"])


async def _find_or_create(rt: Runtime, who: store.Identity, members: list[str],
                          known: dict[str, dict[str, Any]], prevent_creation: bool
                          ) -> tuple[dict[str, Any] | None, bool]:
    """(row, created). A registered DM whose creation never finished is completed here:
    the caller's lookup row is written last, so while it is missing something may be."""
    key = db_dms.members_key(members)
    found = await db_dms.find(rt.db, who.team_id, key)
    if found is not None:
        row = await store.get_channel(rt.db, found)
        if row is not None and await db_channels.is_linked(rt.db, who.user_id, found):
            return row, False
    elif prevent_creation:
        return None, False
    else:
        prefix = "D" if len(set(members)) <= 2 else "G"
        found = await db_dms.claim(rt.db, who.team_id, key, ids.new_id(prefix))
    names = {m: known[m]["name"] for m in members}
    row = db_dms.dm_row(found, who.team_id, who.user_id, list(dict.fromkeys(members)), names)
    others = sorted(set(members) - {who.user_id})
    return await db_dms.ensure(rt.db, row, [*others, who.user_id])


async def _set_open(rt: Runtime, who: store.Identity, row: dict[str, Any], is_open: bool
                    ) -> bool:
    try:
        return await db_dms.set_open(rt.db, row, who.user_id, is_open)
    except db_channels.Refused as exc:
        raise ApiError(exc.error) from exc


async def close(rt: Runtime, who: store.Identity, channel_id: str) -> bool:
    """Close a DM or group DM in the caller's sidebar; whether it was open."""
    row = await visible_channel(rt, who, channel_id)
    if not is_dm(row):
        raise ApiError("method_not_supported_for_channel_type")
    return await _set_open(rt, who, row, False)
