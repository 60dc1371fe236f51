"""Conversations: who may see and change a channel, and the changes themselves."""

from __future__ import annotations

import re
from typing import Any

from webapp import store
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack.shapes import channel_shape

NAME_RE = re.compile(r"^[a-z0-9_\-]+$")


async def visible_channel(rt: Runtime, who: store.Identity, channel_id: str) -> dict[str, Any]:
    """The channel row if the caller may see it; private channels, DMs and group DMs hide
    from non-members (channel_not_found, as if they did not exist)."""
    row = await store.get_channel(rt.db, channel_id)
    if row is None or row["team_id"] != who.team_id:
        raise ApiError("channel_not_found")
    if _members_only(row) and not await store.is_member(rt.db, channel_id, who.user_id):
        raise ApiError("channel_not_found")
    return row


def _members_only(row: dict[str, Any]) -> bool:
    return bool(row["is_private"] or row.get("is_im") or row.get("is_mpim"))


def check_name(name: str | None) -> str:
    if not name:
        raise ApiError("invalid_name_required")
    if len(name) > 80:
        raise ApiError("invalid_name_maxlength")
    if not NAME_RE.match(name):
        raise ApiError("invalid_name_specials")
    if not re.search(r"[a-z0-9]", name):
        raise ApiError("invalid_name_punctuation")
    return name


async def create(rt: Runtime, who: store.Identity, name: str, private: bool) -> dict[str, Any]:
    try:
        row, _ = await store.create_channel(rt.db, who.team_id, who.user_id, name, private,
                                            channel_shape)
    except store.Conflict as exc:
        raise ApiError("name_taken") from exc
    return row


async def join(rt: Runtime, who: store.Identity, channel_id: str) -> tuple[dict[str, Any], bool]:
    """(channel row, whether the caller was already a member)."""
    row = await visible_channel(rt, who, channel_id)
    if row["is_archived"]:
        raise ApiError("is_archived")
    if _members_only(row):
        raise ApiError("method_not_supported_for_channel_type")
    posted = await store.join_channel(rt.db, row, who.user_id, channel_shape)
    # a join that only repaired a missing lookup row still posts channel_joined: the user
    # was already a member, which is what the warning says
    already = not any(p.event.get("type") == "member_joined_channel" for p in posted)
    return row, already
