"""Users: who may see and change a user, profiles, prefs and manual presence.

A change is written in the directory first (the source of truth); its event follows in a
second transaction on the stream's shard (``user_change`` on the workspace stream, a user's
own settings on the personal stream). Repeating a call repeats its event, so a call whose
event step failed is repaired by calling it again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from webapp import store
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack import events, prefs
from webapp.slack.shapes import user_shape
from webapp.store import directory

MAX_PROFILE_FIELDS = 50
MAX_FIELD_NAME = 255
_NAMES = ("real_name", "display_name", "first_name", "last_name")
_EMOJI_RE = re.compile(r"^:[a-z0-9_+'\-]{1,90}:(:skin-tone-[2-6]:)?$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL_RE = re.compile(r"(https?://|www\.)", re.IGNORECASE)


async def announce(rt: Runtime, stream: str, *builds: Callable[[str], dict[str, Any]]) -> None:
    """Append events to ``stream``, in order, in one transaction on the stream's shard."""

    async def append(cur: Any) -> None:
        for build in builds:
            await store.append_event(cur, stream, build)

    await rt.db.transact(stream, append)


async def visible_user(rt: Runtime, who: store.Identity, user_id: str) -> dict[str, Any]:
    """The user's row; a user of another workspace does not exist for the caller."""
    row = await directory.get_user(rt.db, who.team_id, user_id)
    if row is None:
        raise ApiError("user_not_found")
    return row


async def by_email(rt: Runtime, who: store.Identity, email: str) -> dict[str, Any]:
    row = await directory.user_by_email(rt.db, who.team_id, email.strip())
    if row is None:
        raise ApiError("users_not_found")
    return row


# --- users.profile.set ----------------------------------------------------------------------


async def set_profile(rt: Runtime, who: store.Identity, user_id: str | None,
                      changes: dict[str, Any]) -> dict[str, Any]:
    """Check and write profile changes; the user's new row. Refused calls write nothing."""
    if who.is_bot:
        raise ApiError("not_allowed_token_type")
    target = await visible_user(rt, who, user_id or who.user_id)
    if target["id"] != who.user_id:
        await _may_edit_other(rt, who, target)
    fields = check_profile(changes)
    if "email" in fields and fields["email"] != target["email"] and not who.is_admin:
        raise ApiError("not_admin")
    try:
        row = await directory.update_profile(rt.db, who.team_id, target["id"], fields)
    except directory.Conflict as exc:
        raise ApiError("email_taken") from exc
    user = user_shape(row)
    await announce(rt, who.team_id, lambda ts: events.user_change(user, ts))
    return row


async def _may_edit_other(rt: Runtime, who: store.Identity, target: dict[str, Any]) -> None:
    """Admins edit others; an admin's or a bot's profile only the (primary) owner."""
    if not who.is_admin:
        raise ApiError("not_admin")
    me = await directory.get_user(rt.db, who.team_id, who.user_id)
    owner = bool(me and me["is_owner"])
    if (target["is_admin"] or target["is_owner"]) and not owner:
        raise ApiError("cannot_update_admin_user")
    if target["is_bot"] and not owner:
        raise ApiError("not_app_admin")


def check_profile(changes: dict[str, Any]) -> dict[str, Any]:
    """Slack's profile fields -> column values, validated. Fields we do not keep (custom
    ``fields``, ``skype``, images) are accepted and ignored, as Slack ignores unknown ones."""
    if len(changes) > MAX_PROFILE_FIELDS or any(
        not isinstance(k, str) or len(k) > MAX_FIELD_NAME for k in changes
    ):
        raise ApiError("invalid_profile")
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "status_expiration":
            out[name] = _expiration(value)
        elif name in directory.PROFILE_COLUMNS:
            out[name] = _text_field(name, value)
    if "email" in out:
        out["email"] = _email(out["email"])
    return out


def _text_field(name: str, value: Any) -> str:
    if value is None:
        value = ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ApiError("invalid_profile")
    value = value.strip()
    if len(value) > directory.PROFILE_COLUMNS[name]:
        raise ApiError("too_long")
    if name in _NAMES and _URL_RE.search(value):
        raise ApiError("name_not_allowed")
    if name == "display_name" and value.startswith("@"):
        raise ApiError("invalid_starts_with_at")
    if name == "status_emoji" and value and not _EMOJI_RE.match(value):
        raise ApiError("invalid_emoji_not_allowed")
    return value


def _expiration(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if value is None or value == "":
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**40:
        raise ApiError("invalid_profile")
    return value


def _email(value: str) -> str | None:
    if not value:
        return None
    if not _EMAIL_RE.match(value):
        raise ApiError("invalid_profile")
    return value.lower()


# --- prefs and manual presence ----------------------------------------------------------------


async def all_prefs(rt: Runtime, who: store.Identity) -> dict[str, Any]:
    return {**prefs.DEFAULTS, **await directory.get_prefs(rt.db, who.user_id)}


async def set_prefs(rt: Runtime, who: store.Identity,
                    changes: dict[str, Any]) -> dict[str, Any]:
    """Store ``changes`` (pref name -> value, already checked); one ``pref_change`` per
    pref on the caller's personal stream. Returns every pref."""
    stored = await directory.merge_prefs(rt.db, who.user_id, changes, prefs.MAX_STORED)
    if stored is None:
        raise ApiError("too_many_prefs")
    await announce(rt, who.user_id, *(
        lambda ts, name=name, value=value: events.pref_change(name, value, ts)
        for name, value in changes.items()))
    return {**prefs.DEFAULTS, **stored}


def check_prefs(changes: dict[str, Any]) -> dict[str, Any]:
    if not changes or len(changes) > MAX_PROFILE_FIELDS:
        raise ApiError("invalid_prefs")
    out = {}
    for name, value in changes.items():
        if not isinstance(name, str) or not prefs.NAME_RE.match(name):
            raise ApiError("invalid_name")
        try:
            out[name] = prefs.coerce(name, value)
        except ValueError as exc:
            raise ApiError("invalid_value") from exc
    return out


async def set_presence(rt: Runtime, who: store.Identity, away: bool) -> None:
    """Manual away (or back to automatic), kept in the directory so users.getPresence reads
    it; the caller's own sockets hear ``manual_presence_change``. Telling watchers
    (``presence_change``) is the presence tier's part (issue 9)."""
    await directory.set_manual_away(rt.db, who.user_id, away)
    presence = "away" if away else "active"
    await announce(rt, who.user_id, lambda ts: events.manual_presence_change(presence, ts))
