"""Usergroups: creating them, their member lists, and the ``subteam_*`` events on the
workspace stream. Any member may create and edit usergroups (Slack's default workspace
setting); every change is written in the directory first, then announced."""

from __future__ import annotations

import re
from typing import Any

from webapp import store
from webapp.actions import channels
from webapp.actions.users import announce
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack import events
from webapp.slack.shapes import usergroup_shape
from webapp.store import directory, usergroups

HANDLE_RE = re.compile(r"^[a-z0-9][a-z0-9._\-]{0,79}$")
# mentions Slack keeps for itself
FORBIDDEN_HANDLES = frozenset({"here", "channel", "everyone", "group", "slackbot"})


def handle_for(name: str, handle: str | None) -> str:
    """The given handle, or one made from the name ("Design Team" -> "design-team")."""
    if handle is None:
        handle = re.sub(r"[^a-z0-9._\-]+", "-", name.lower()).strip("-._")[:80]
        if not handle:
            raise ApiError("bad_handle")
    handle = handle.removeprefix("@").lower()
    if handle in FORBIDDEN_HANDLES:
        raise ApiError("forbidden_handle")
    if not HANDLE_RE.match(handle):
        raise ApiError("bad_handle")
    return handle


async def default_channels(rt: Runtime, who: store.Identity,
                           ids: list[str]) -> dict[str, list[str]]:
    """Slack's prefs: public ``channels`` and private ``groups`` the caller can see."""
    prefs: dict[str, list[str]] = {"channels": [], "groups": []}
    for channel_id in ids:
        try:
            row = await channels.visible_channel(rt, who, channel_id)
        except ApiError as exc:
            raise ApiError("invalid_channel_provided") from exc
        if row.get("is_im") or row.get("is_mpim"):
            raise ApiError("invalid_channel_provided")
        prefs["groups" if row["is_private"] else "channels"].append(row["id"])
    return prefs


async def create(rt: Runtime, who: store.Identity, name: str, handle: str,
                 description: str, prefs: dict[str, list[str]]) -> dict[str, Any]:
    try:
        row = await usergroups.create(rt.db, who.team_id, who.user_id, name, handle,
                                      description, prefs)
    except directory.Conflict as exc:
        raise ApiError(str(exc)) from exc
    subteam = usergroup_shape(row, users=[], count=0)
    await announce(rt, who.team_id, lambda ts: events.subteam_created(subteam, ts))
    return row


async def existing(rt: Runtime, who: store.Identity, group_id: str,
                   include_disabled: bool = True) -> dict[str, Any]:
    row = await usergroups.get(rt.db, who.team_id, group_id)
    if row is None or (row["disabled"] and not include_disabled):
        raise ApiError("no_such_subteam")
    return row


async def member_ids(rt: Runtime, group_id: str) -> list[str]:
    return (await usergroups.members(rt.db, [group_id]))[group_id]


async def listing(rt: Runtime, who: store.Identity, include_users: bool, include_count: bool,
                  include_disabled: bool) -> list[dict[str, Any]]:
    rows = await usergroups.list_groups(rt.db, who.team_id, include_disabled)
    members: dict[str, list[str]] = {}
    if include_users or include_count:
        members = await usergroups.members(rt.db, [r["id"] for r in rows])
    return [usergroup_shape(r, users=members[r["id"]] if include_users else None,
                            count=len(members[r["id"]]) if include_count else None)
            for r in rows]


async def _announce_updated(rt: Runtime, who: store.Identity, row: dict[str, Any]) -> None:
    """``subteam_updated`` with the group as it now stands (members included, as Slack's
    event carries them). Sent even when nothing changed, so repeating a call whose event
    step failed repairs it."""
    users = await member_ids(rt, row["id"])
    subteam = usergroup_shape(row, users=users, count=len(users))
    await announce(rt, who.team_id, lambda ts: events.subteam_updated(subteam, ts))


async def update(rt: Runtime, who: store.Identity, group_id: str,
                 changes: dict[str, Any]) -> dict[str, Any]:
    """Change name, handle, description or default channels (``prefs``), already checked
    (the caller found the group first); the new row."""
    try:
        row = await usergroups.update_group(rt.db, who.team_id, group_id, who.user_id, changes)
    except directory.Conflict as exc:
        raise ApiError(str(exc)) from exc
    if row is None:
        raise ApiError("no_such_subteam")
    await _announce_updated(rt, who, row)
    return row


async def set_disabled(rt: Runtime, who: store.Identity, group_id: str,
                       disabled: bool) -> dict[str, Any]:
    """usergroups.disable / usergroups.enable. Slack names no error for a group already in
    that state, so it answers ok with the group as it is (idempotent)."""
    row = await usergroups.set_disabled(rt.db, who.team_id, group_id, who.user_id, disabled)
    if row is None:
        raise ApiError("no_such_subteam")
    await _announce_updated(rt, who, row)
    return row


async def set_members(rt: Runtime, who: store.Identity, group_id: str,
                      users: list[str]) -> usergroups.MembersChanged:
    """Replace the member list; every user must be an active member of the workspace."""
    await existing(rt, who, group_id)
    found = await directory.existing_users(rt.db, who.team_id, users)
    if len(found) != len(set(users)):
        raise ApiError("invalid_users")
    changed = await usergroups.replace_members(rt.db, who.team_id, group_id, users,
                                               who.user_id)
    if changed is None:
        raise ApiError("no_such_subteam")
    subteam = usergroup_shape(changed.row, users=changed.users, count=len(changed.users))
    builds = [lambda ts: events.subteam_updated(subteam, ts)]
    if changed.added or changed.removed:
        builds.insert(0, lambda ts: events.subteam_members_changed(
            subteam, changed.previous_update, changed.added, changed.removed, ts))
    await announce(rt, who.team_id, *builds)
    return changed
