"""Conversations: who may see and change a channel, and the changes themselves."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from webapp import store
from webapp.api.args import CHANNEL_ID_RE, USER_ID_RE
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack.shapes import channel_shape
from webapp.store import channels as db_channels
from webapp.store import dms as db_dms

NAME_RE = re.compile(r"^[a-z0-9_\-]+$")
MAX_TOPIC = 250


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


def is_dm(row: dict[str, Any]) -> bool:
    return bool(row.get("is_im") or row.get("is_mpim"))


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


async def _member_of(rt: Runtime, who: store.Identity, channel_id: str) -> dict[str, Any]:
    """The visible channel the caller is a member of; not_in_channel otherwise."""
    row = await visible_channel(rt, who, channel_id)
    if not await store.is_member(rt.db, channel_id, who.user_id):
        raise ApiError("not_in_channel")
    return row


def _refused(exc: db_channels.Refused) -> ApiError:
    return ApiError(exc.error)


async def resolve_target(rt: Runtime, who: store.Identity, ref: str) -> str:
    """Where chat.postMessage's ``channel`` points: a conversation id as given (the post
    checks it), ``general`` / ``#general`` by name in the caller's workspace, or a user id:
    the DM with that user, opened if need be. Anything else is channel_not_found."""
    if CHANNEL_ID_RE.match(ref):
        return ref
    if USER_ID_RE.match(ref):
        from webapp.actions import dms  # dms needs visible_channel from here

        return await dms.dm_with(rt, who, ref)
    found = await db_channels.channel_id_by_name(rt.db, who.team_id, ref.removeprefix("#"))
    if found is None:
        raise ApiError("channel_not_found")
    return found


# --- reading --------------------------------------------------------------------------------


async def info(rt: Runtime, who: store.Identity, channel_id: str, with_count: bool
               ) -> dict[str, Any]:
    """conversations.info's channel: with the caller's read state when a member."""
    row = await visible_channel(rt, who, channel_id)
    member = await db_channels.member_row(rt.db, channel_id, who.user_id)
    if member is not None:
        unread, shown = await db_channels.unread_counts(rt.db, channel_id, who.user_id,
                                                        int(member["last_read_us"]))
        member = {**member, "unread_count": unread, "unread_count_display": shown}
    count = (await db_channels.member_counts(rt.db, [channel_id]))[channel_id] \
        if with_count else None
    return channel_shape(row, member is not None, viewer=who.user_id, member=member,
                         num_members=count)


# id prefixes of conversations a caller may be in without them being public (ours: private
# channels and group DMs are G…, DMs D…; public channels C…)
_PREFIXES = {"private_channel": "G", "mpim": "G", "im": "D"}


def _kind(row: dict[str, Any]) -> str:
    if row["is_im"]:
        return "im"
    if row["is_mpim"]:
        return "mpim"
    return "private_channel" if row["is_private"] else "public_channel"


async def list_conversations(rt: Runtime, who: store.Identity, types: tuple[str, ...],
                             exclude_archived: bool, after: str, limit: int, *,
                             member: str | None = None,
                             ) -> tuple[list[dict[str, Any]], str | None]:
    """A page of conversations.list in id order, and the id to continue after (None at
    the end). The workspace's public channels come from a scatter read; the caller's own
    private channels, group DMs and DMs from its lookup rows. No query per channel.

    With ``member`` (users.conversations), only the conversations that user is in, every
    one from its lookup rows; of another user's, the members-only ones only where the
    caller is a member too, as the channels' own membership rows say (a lookup row left
    behind by a half-done leave must not reveal anything)."""
    listed = member or who.user_id
    scatter = member is None and "public_channel" in types
    public = db_channels.team_channels(rt.db, who.team_id, after, limit,
                                       exclude_archived=exclude_archived) \
        if scatter else _nothing()
    reads = [store.user_channels(rt.db, who.user_id), public]
    if listed != who.user_id:
        reads.append(store.user_channels(rt.db, listed))
    mine, rows, *theirs = await asyncio.gather(*reads)
    shared = set(mine)
    prefixes = {_PREFIXES[t] for t in types if t in _PREFIXES}
    if not scatter and "public_channel" in types:
        prefixes.add("C")
    candidates = [c for c in (theirs[0] if theirs else mine) if c > after
                  and c[:1] in prefixes and (c[:1] == "C" or c in shared)]
    if candidates:
        found = await db_channels.rows_as_member(rt.db, candidates, listed, viewer=who.user_id)
        rows += [r for r in found if r["team_id"] == who.team_id and _kind(r) in types
                 and not (exclude_archived and r["is_archived"])
                 and (r["viewer_member"] or not _members_only(r))]
    rows.sort(key=lambda r: r["id"])
    page, more = rows[:limit], len(rows) > limit
    return await _list_shapes(rt, who, page, shared), page[-1]["id"] if more else None


async def _nothing() -> list[dict[str, Any]]:
    return []


async def _list_shapes(rt: Runtime, who: store.Identity, rows: list[dict[str, Any]],
                       mine: set[str]) -> list[dict[str, Any]]:
    counts = await db_channels.member_counts(rt.db, [r["id"] for r in rows if not r["is_im"]])
    peers = [channel_shape(r, viewer=who.user_id)["user"] for r in rows if r["is_im"]]
    users = await db_dms.team_users(rt.db, who.team_id, sorted(set(peers)))
    shapes = []
    for row in rows:
        # rows read with their membership carry the caller's (viewer_member); public
        # channels of the scatter read are the caller's if its lookup rows say so
        in_it = bool(row["viewer_member"]) if "viewer_member" in row else row["id"] in mine
        shape = channel_shape(row, in_it, viewer=who.user_id,
                              member=row if in_it and is_dm(row) else None,
                              num_members=counts.get(row["id"]))
        if row["is_im"]:
            peer = users.get(shape["user"])
            shape["is_user_deleted"] = bool(peer is None or peer["deleted"])
        shapes.append(shape)
    return shapes


async def members(rt: Runtime, who: store.Identity, channel_id: str, after: str, limit: int
                  ) -> tuple[list[str], str | None]:
    await visible_channel(rt, who, channel_id)
    ids = await db_channels.members_page(rt.db, channel_id, after, limit)
    return ids[:limit], ids[limit - 1] if len(ids) > limit else None


# --- membership -----------------------------------------------------------------------------


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


async def _team_user_errors(rt: Runtime, who: store.Identity, users: list[str]
                            ) -> list[tuple[str, str]]:
    found = await db_dms.team_users(rt.db, who.team_id, users)
    return [(u, "user_not_found") for u in users if u not in found or found[u]["deleted"]]


async def invite(rt: Runtime, who: store.Identity, channel_id: str, users: list[str]
                 ) -> dict[str, Any]:
    """Add ``users`` to a channel the caller is in. Every user is checked before anyone is
    added: one bad user refuses the whole call, as Slack does without ``force``."""
    row = await visible_channel(rt, who, channel_id)
    if is_dm(row):
        raise ApiError("method_not_supported_for_channel_type")
    if row["is_archived"]:
        raise ApiError("is_archived")
    if not await store.is_member(rt.db, channel_id, who.user_id):
        raise ApiError("not_in_channel")
    errors = [(u, "cant_invite_self") for u in users if u == who.user_id]
    others = [u for u in users if u != who.user_id]
    errors += await _team_user_errors(rt, who, others)
    present = set(await db_channels.members_of(rt.db, channel_id, others))
    errors += [(u, "already_in_channel") for u in others if u in present]
    if errors:
        raise ApiError(errors[0][1], errors=[{"user": u, "ok": False, "error": e}
                                             for u, e in errors])
    for user in others:
        await store.join_channel(rt.db, row, user, channel_shape, inviter=who.user_id)
    return row


async def kick(rt: Runtime, who: store.Identity, channel_id: str, user: str) -> None:
    row = await visible_channel(rt, who, channel_id)
    if is_dm(row):
        raise ApiError("method_not_supported_for_channel_type")
    if user == who.user_id:
        raise ApiError("cant_kick_self")
    if row["is_general"]:
        raise ApiError("cant_kick_from_general")
    if not await store.is_member(rt.db, channel_id, who.user_id):
        raise ApiError("not_in_channel")
    if await _team_user_errors(rt, who, [user]):
        raise ApiError("user_not_found")
    try:
        removed = await db_channels.remove_member(rt.db, channel_id, user, who.user_id)
    except db_channels.Refused as exc:
        raise _refused(exc) from exc
    if not removed:
        raise ApiError("not_in_channel")


async def leave(rt: Runtime, who: store.Identity, channel_id: str) -> bool:
    """Whether the caller was a member (Slack answers ok either way)."""
    row = await visible_channel(rt, who, channel_id)
    if is_dm(row):
        raise ApiError("method_not_supported_for_channel_type")
    if row["is_general"]:
        raise ApiError("cant_leave_general")
    if row["is_archived"]:
        raise ApiError("is_archived")
    try:
        return await db_channels.remove_member(rt.db, channel_id, who.user_id, who.user_id,
                                               refuse_archived=True)
    except db_channels.Refused as exc:
        raise _refused(exc) from exc


# --- changes --------------------------------------------------------------------------------


async def set_archived(rt: Runtime, who: store.Identity, channel_id: str, archived: bool
                       ) -> dict[str, Any]:
    row = await visible_channel(rt, who, channel_id)
    if is_dm(row):
        raise ApiError("method_not_supported_for_channel_type")
    if archived and row["is_general"]:
        raise ApiError("cant_archive_general")
    if bool(row["is_archived"]) == archived:
        raise ApiError("already_archived" if archived else "not_archived")
    if not await store.is_member(rt.db, channel_id, who.user_id):
        raise ApiError("not_in_channel")
    try:
        return await db_channels.set_archived(rt.db, channel_id, archived, who.user_id)
    except db_channels.Refused as exc:
        raise _refused(exc) from exc


async def rename(rt: Runtime, who: store.Identity, channel_id: str, name: str | None
                 ) -> dict[str, Any]:
    """Only the channel's creator or a workspace admin may rename it (Slack's rule)."""
    row = await _member_of(rt, who, channel_id)
    if is_dm(row):
        raise ApiError("method_not_supported_for_channel_type")
    if row["creator"] != who.user_id and not who.is_admin:
        raise ApiError("not_authorized")
    name = check_name(name)
    if name == row["name"]:
        return row
    try:
        return await db_channels.rename_channel(rt.db, channel_id, who.team_id, name,
                                                who.user_id)
    except store.Conflict as exc:
        raise ApiError("name_taken") from exc
    except db_channels.Refused as exc:
        raise _refused(exc) from exc


async def set_text(rt: Runtime, who: store.Identity, channel_id: str, field: str, value: str
                   ) -> dict[str, Any]:
    """setTopic / setPurpose: members only, not in an archived channel nor a 1:1 DM."""
    if len(value) > MAX_TOPIC:
        raise ApiError("too_long")
    row = await visible_channel(rt, who, channel_id)
    if row["is_im"]:
        raise ApiError("method_not_supported_for_channel_type")
    if row["is_archived"]:
        raise ApiError("is_archived")
    if not await store.is_member(rt.db, channel_id, who.user_id):
        raise ApiError("not_in_channel")
    try:
        return await db_channels.set_text(rt.db, channel_id, field, value, who.user_id)
    except db_channels.Refused as exc:
        raise _refused(exc) from exc


async def mark(rt: Runtime, who: store.Identity, channel_id: str, ts_us: int) -> None:
    row = await visible_channel(rt, who, channel_id)
    try:
        await db_channels.mark_read(rt.db, row, who.user_id, ts_us)
    except db_channels.Refused as exc:
        raise _refused(exc) from exc
