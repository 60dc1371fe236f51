"""Slack object shapes built from rows: what every method and event says about a channel,
a message or a user. One place, so a field added here is right everywhere."""

from __future__ import annotations

import functools
import hashlib
import json
import time
import unicodedata
import uuid
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cluster import ids

if TYPE_CHECKING:
    from webapp.store.directory import Identity


def channel_shape(row: dict[str, Any], is_member: bool | None = None, *,
                  viewer: str | None = None, member: dict[str, Any] | None = None,
                  num_members: int | None = None) -> dict[str, Any]:
    """Slack's conversation object. ``viewer`` is who looks (a DM's ``user`` is the other
    member); ``member`` the viewer's membership row when the viewer is in it (adds
    ``last_read``, ``is_open`` for DMs, and ``unread_count``/``unread_count_display`` when
    it carries them); ``num_members`` when it was counted."""
    if row.get("is_im"):
        shape = _im_shape(row, viewer)
    else:
        shape = _channel_fields(row)
        if is_member is not None:
            shape["is_member"] = is_member
    if member is not None:
        shape["last_read"] = format_last_read(int(member.get("last_read_us") or 0))
        if row.get("is_im") or row.get("is_mpim"):
            shape["is_open"] = bool(member.get("is_open", 1))
        for key in ("unread_count", "unread_count_display"):
            if key in member:
                shape[key] = int(member[key])
    if num_members is not None:
        shape["num_members"] = num_members
    return shape


def _channel_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A public or private channel, or a group DM. Our private channels and group DMs have
    G ids, which Slack marks ``is_group`` rather than ``is_channel``."""
    mpim = bool(row.get("is_mpim"))
    private = bool(row["is_private"]) or mpim
    return {
        "id": row["id"], "name": row["name"], "name_normalized": row["name"],
        "is_channel": not private, "is_group": private, "is_im": False, "is_mpim": mpim,
        "is_private": private, "is_archived": bool(row["is_archived"]),
        "is_general": bool(row.get("is_general")), "unlinked": 0,
        "is_shared": False, "is_ext_shared": False, "is_org_shared": False,
        "is_pending_ext_shared": False, "pending_shared": [],
        "pending_connected_team_ids": [], "parent_conversation": None,
        "created": row["created"], "updated": _updated(row), "creator": row["creator"],
        "context_team_id": row["team_id"], "shared_team_ids": [row["team_id"]],
        "topic": {"value": row.get("topic") or "", "creator": row.get("topic_creator") or "",
                  "last_set": int(row.get("topic_last_set") or 0)},
        "purpose": {"value": row.get("purpose") or "",
                    "creator": row.get("purpose_creator") or "",
                    "last_set": int(row.get("purpose_last_set") or 0)},
        "previous_names": json.loads(row["previous_names"]) if row.get("previous_names")
        else [],
    }


def _im_shape(row: dict[str, Any], viewer: str | None) -> dict[str, Any]:
    """A 1:1 DM: Slack's shorter object, whose ``user`` is the other member (yourself in
    the DM with yourself). Its row's name holds the sorted member ids (dm_members)."""
    members = dm_members(row)
    others = [m for m in members if m != viewer]
    return {"id": row["id"], "created": row["created"], "updated": _updated(row),
            "is_archived": bool(row["is_archived"]), "is_im": True, "is_org_shared": False,
            "context_team_id": row["team_id"], "user": others[0] if others else members[0]}


def dm_members(row: dict[str, Any]) -> list[str]:
    """The members of a 1:1 DM, from its row: Slack DMs have no name, so ours keeps the
    member ids there (never shown), which spares a membership read per DM listed."""
    return row["name"].split(",")


def _updated(row: dict[str, Any]) -> int:
    return int(row.get("updated") or 0) or int(row["created"]) * 1000


def format_last_read(ts_us: int) -> str:
    """A read position as Slack writes it; never read is "0000000000.000000"."""
    return ids.format_ts(ts_us) if ts_us else "0000000000.000000"


# what a deleted thread parent becomes while its replies remain (Slack's tombstone)
TOMBSTONE_USER = "USLACKBOT"
TOMBSTONE_TEXT = "This message was deleted."
# a parent lists its first repliers, as Slack does; reply_users_count counts them all
SHOWN_REPLY_USERS = 5


def message_shape(
    who: Identity, text: str, ts: str, thread_ts_us: int | None, client_msg_id: str | None,
    **columns: Any,
) -> dict[str, Any]:
    """A message ``who`` is posting, from the values of its row to be (see row_to_message
    for ``columns``: subtype, blocks, attachments, reply_broadcast, parent_user_id)."""
    row = {"user_id": who.user_id, "bot_id": who.bot_id, "text": text,
           "ts_us": ids.parse_ts(ts), "thread_ts_us": thread_ts_us,
           "client_msg_id": client_msg_id, **columns}
    return row_to_message(row, who.team_id)


def row_to_message(row: dict[str, Any], team_id: str) -> dict[str, Any]:
    """Slack's message object from a ``messages`` row. Blocks and attachments are stored as
    JSON text; a thread parent carries its reply summary, a reply its parent."""
    msg: dict[str, Any] = {"type": "message"}
    if row.get("subtype"):
        msg["subtype"] = row["subtype"]
    msg |= {"user": row["user_id"], "text": row["text"], "ts": ids.format_ts(row["ts_us"]),
            "team": team_id}
    if row.get("bot_id"):
        msg["bot_id"] = row["bot_id"]
    if row.get("client_msg_id"):
        msg["client_msg_id"] = row["client_msg_id"]
    for field in ("blocks", "attachments"):
        if row.get(field):
            msg[field] = json.loads(row[field])
    if row.get("edited_by"):
        msg["edited"] = {"user": row["edited_by"], "ts": ids.format_ts(row["edited_ts_us"])}
    if row.get("extra"):
        msg |= json.loads(row["extra"])
    if row.get("subtype") == "tombstone":
        msg["hidden"] = True
    if row.get("thread_ts_us") is not None:
        msg["thread_ts"] = ids.format_ts(row["thread_ts_us"])
        if row.get("parent_user_id"):
            msg["parent_user_id"] = row["parent_user_id"]
    elif row.get("reply_count") or row.get("subtype") == "tombstone":
        msg |= thread_summary(row)
    return msg


def channel_notice(channel: dict[str, Any], user_id: str, field: str, value: str,
                   old_name: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """Slack's stored announcement of a topic, purpose or name change (``field``), as
    (subtype, text, its own fields): channel_topic / channel_purpose / channel_name, or
    group_* for a private channel or group DM. An empty topic or purpose reads "cleared"."""
    kind = "group" if channel.get("is_private") or channel.get("is_mpim") else "channel"
    who = f"<@{user_id}>"
    subtype = NOTICE_SUBTYPES[kind, field]
    if field == "name":
        return (subtype, f'{who} has renamed the {kind} from "{old_name}" to "{value}"',
                {"old_name": old_name, "name": value})
    text = f"{who} set the {kind} {field}: {value}" if value \
        else f"{who} cleared the {kind} {field}"
    return subtype, text, {field: value}


NOTICE_SUBTYPES = {
    ("channel", "topic"): "channel_topic", ("channel", "purpose"): "channel_purpose",
    ("channel", "name"): "channel_name", ("group", "topic"): "group_topic",
    ("group", "purpose"): "group_purpose", ("group", "name"): "group_name",
}


def thread_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A thread parent's fields: its own ts as thread_ts, and who replied how often."""
    users = json.loads(row.get("reply_users") or "[]")
    latest = row.get("latest_reply_us")
    return {"thread_ts": ids.format_ts(row["ts_us"]), "reply_count": row.get("reply_count", 0),
            "reply_users_count": len(users), "reply_users": users[:SHOWN_REPLY_USERS],
            "latest_reply": ids.format_ts(latest) if latest else ids.format_ts(row["ts_us"]),
            "is_locked": False, "subscribed": False}


# --- reactions and pins: what people added to a message ------------------------------------

# a reaction names at most this many of its reactors (``count`` counts them all), as Slack
# does unless reactions.get / reactions.list are asked for ``full``
SHOWN_REACTION_USERS = 50


def reactions_shape(rows: list[dict[str, Any]], full: bool = False) -> list[dict[str, Any]]:
    """Slack's ``reactions`` from a message's reaction rows (name, user_id) in the order they
    were added: each emoji where it first appeared, its reactors in the order they came."""
    by_name: dict[str, list[str]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row["user_id"])
    return [{"name": name, "users": users if full else users[:SHOWN_REACTION_USERS],
             "count": len(users)} for name, users in by_name.items()]


def with_extras(msg: dict[str, Any], reactions: list[dict[str, Any]] | None,
                pinned_in: str | None, full: bool = False) -> dict[str, Any]:
    """``msg`` with its ``reactions`` and ``pinned_to`` added where it has any (Slack leaves
    both out of a message that has none)."""
    if reactions:
        msg["reactions"] = reactions_shape(reactions, full)
    if pinned_in:
        msg["pinned_to"] = [pinned_in]
    return msg


def pin_item(msg: dict[str, Any], channel_id: str, created_us: int,
             created_by: str) -> dict[str, Any]:
    """A pinned message as pins.list and pin_added / pin_removed carry it (``created`` in
    seconds)."""
    return {"type": "message", "created": created_us // 1_000_000, "created_by": created_by,
            "channel": channel_id, "message": msg}


# --- people: users and their profiles, bots, the workspace, usergroups -----------------------

# avatars: gravatar URLs (the email's hash, else the id's), with an identicon for anyone
# without a gravatar, so every image URL is stable and loads without our serving files
AVATAR_BASE = "https://secure.gravatar.com/avatar/"
_USER_IMAGE_SIZES = (24, 32, 48, 72, 192, 512)
_TEAM_IMAGE_SIZES = (34, 44, 68, 88, 102, 132, 230)
# Slack's name colours (hex without "#"); a user's is picked by its id
_COLORS = ("9f69e7", "4bbe2e", "e7392d", "3c989f", "674b1b", "e96699", "e0a729", "684b6c",
           "5b89d5", "2b6836", "99d04a", "dd8527", "bb86b7", "e06b56", "53a8a7", "a63024")
# zoneinfo knows abbreviations only; Slack's tz_label is the long name
_TZ_LABELS = {
    "UTC": "Coordinated Universal Time", "GMT": "Greenwich Mean Time",
    "BST": "British Summer Time", "IST": "India Standard Time",
    "WET": "Western European Time", "WEST": "Western European Summer Time",
    "CET": "Central European Time", "CEST": "Central European Summer Time",
    "EET": "Eastern European Time", "EEST": "Eastern European Summer Time",
    "EST": "Eastern Standard Time", "EDT": "Eastern Daylight Time",
    "CST": "Central Standard Time", "CDT": "Central Daylight Time",
    "MST": "Mountain Standard Time", "MDT": "Mountain Daylight Time",
    "PST": "Pacific Standard Time", "PDT": "Pacific Daylight Time",
    "AKST": "Alaska Standard Time", "AKDT": "Alaska Daylight Time",
    "HST": "Hawaii-Aleutian Standard Time", "JST": "Japan Standard Time",
    "KST": "Korea Standard Time", "AEST": "Australian Eastern Standard Time",
    "AEDT": "Australian Eastern Daylight Time", "NZST": "New Zealand Standard Time",
    "NZDT": "New Zealand Daylight Time",
}


# users.list shapes up to 1,000 users a page: what depends only on an id, an email or a
# zone is computed once per process (bounded caches)
@functools.lru_cache(maxsize=65_536)
def _digest(key: str) -> str:
    return hashlib.md5(key.strip().lower().encode(), usedforsecurity=False).hexdigest()


@functools.lru_cache(maxsize=65_536)
def _cached_images(key: str, sizes: tuple[int, ...]) -> tuple[tuple[str, str], ...]:
    digest = _digest(key)
    return tuple((f"image_{s}", f"{AVATAR_BASE}{digest}?s={s}&d=identicon") for s in sizes)


def _images(key: str, sizes: tuple[int, ...]) -> dict[str, str]:
    return dict(_cached_images(key, sizes))


def _normalized(text: str) -> str:
    """Slack's *_normalized: the name with accents and other marks removed."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tz_fields(tz: str, now: float | None = None) -> dict[str, Any]:
    """tz, tz_label, tz_offset (seconds east of UTC) of a zone name, as of ``now``."""
    return dict(_tz_fields(tz, int(time.time() if now is None else now) // 60 * 60))


@functools.lru_cache(maxsize=4096)
def _tz_fields(tz: str, now: int) -> tuple[tuple[str, Any], ...]:
    """tz_fields at a whole minute (offsets change on minute boundaries)."""
    try:
        zone: tzinfo = ZoneInfo(tz)
    except (ValueError, ZoneInfoNotFoundError):
        tz, zone = "UTC", UTC
    moment = datetime.fromtimestamp(now, zone)
    offset = int(moment.utcoffset().total_seconds())  # type: ignore[union-attr]
    abbr = moment.tzname() or ""
    sign, minutes = ("+" if offset >= 0 else "-"), abs(offset) // 60
    if tz == "Europe/Dublin" and abbr == "IST":  # the one IST that is not India's
        abbr = "Irish Standard Time"
    label = _TZ_LABELS.get(abbr, abbr if " " in abbr else "") or (
        f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}")
    return (("tz", tz), ("tz_label", label), ("tz_offset", offset))


def app_id_of(bot_id: str) -> str:
    """Our bots are not installed from apps; each gets a stable app id of its own."""
    return "A" + bot_id[1:]


def profile_shape(row: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """Slack's user profile. A status whose expiration passed reads as cleared."""
    expiration = int(row["status_expiration"] or 0)
    expired = bool(expiration) and expiration <= (time.time() if now is None else now)
    key = row["email"] or row["id"]
    profile: dict[str, Any] = {
        "title": row["title"], "phone": row["phone"], "skype": "",
        "real_name": row["real_name"], "real_name_normalized": _normalized(row["real_name"]),
        "display_name": row["display_name"],
        "display_name_normalized": _normalized(row["display_name"]),
        "fields": {}, "status_text": "" if expired else row["status_text"],
        "status_emoji": "" if expired else row["status_emoji"],
        "status_emoji_display_info": [],
        "status_expiration": 0 if expired else expiration,
        "avatar_hash": "g" + _digest(key)[:11],
        "first_name": row["first_name"], "last_name": row["last_name"],
        **_images(key, _USER_IMAGE_SIZES), "team": row["team_id"],
    }
    if row["email"]:
        profile["email"] = row["email"]
    if row["is_bot"]:
        profile |= {"bot_id": row["bot_id"], "api_app_id": app_id_of(row["bot_id"]),
                    "always_active": False}
    return profile


def user_shape(row: dict[str, Any], *, locale: bool = False) -> dict[str, Any]:
    """Slack's user object (users.info, users.list, user_change, team_join)."""
    owner = bool(row["is_owner"])
    user: dict[str, Any] = {
        "id": row["id"], "team_id": row["team_id"], "name": row["name"],
        "deleted": bool(row["deleted"]),
        "color": _COLORS[int(_digest(row["id"])[:8], 16) % len(_COLORS)],
        "real_name": row["real_name"], **tz_fields(row["tz"]), "profile": profile_shape(row),
        "is_admin": bool(row["is_admin"]) or owner, "is_owner": owner,
        # one owner per workspace here: the owner is the primary owner
        "is_primary_owner": owner, "is_restricted": False, "is_ultra_restricted": False,
        "is_bot": bool(row["is_bot"]), "is_app_user": False,
        "updated": int(row["updated"] or row["created"]),
        "is_email_confirmed": bool(row["email"]),
        "who_can_share_contact_card": "EVERYONE",
    }
    if locale:
        user["locale"] = "en-US"
    return user


def bot_shape(row: dict[str, Any]) -> dict[str, Any]:
    """bots.info's bot, from its bot user's row."""
    return {"id": row["bot_id"], "deleted": bool(row["deleted"]), "name": row["name"],
            "updated": int(row["updated"] or row["created"]),
            "app_id": app_id_of(row["bot_id"]), "user_id": row["id"],
            "icons": _images(row["id"], (36, 48, 72))}


def team_shape(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"],
            "url": f"https://{row['domain']}.backchannel.local/", "domain": row["domain"],
            "email_domain": "",
            "icon": {**_images(row["id"], _TEAM_IMAGE_SIZES), "image_default": True},
            "avatar_base_url": AVATAR_BASE, "is_verified": False}


def usergroup_shape(row: dict[str, Any], users: list[str] | None = None,
                    count: int | None = None) -> dict[str, Any]:
    """Slack's usergroup; ``users`` and ``user_count`` only when asked for."""
    prefs = json.loads(row["prefs"]) if row.get("prefs") else {}
    shape: dict[str, Any] = {
        "id": row["id"], "team_id": row["team_id"], "is_usergroup": True,
        "is_subteam": True, "name": row["name"], "description": row["description"],
        "handle": row["handle"], "is_external": False, "date_create": row["created"],
        "date_update": row["updated"], "date_delete": row["disabled"], "auto_type": None,
        "created_by": row["created_by"], "updated_by": row["updated_by"],
        "deleted_by": row.get("deleted_by") if row["disabled"] else None,
        "prefs": {"channels": prefs.get("channels", []), "groups": prefs.get("groups", [])},
    }
    if users is not None:
        shape["users"] = users
    if count is not None:
        shape["user_count"] = count
    return shape


# --- scheduled messages and search results ----------------------------------------------------


def permalink_url(domain: str, channel_id: str, ts_us: int,
                  thread_ts_us: int | None = None) -> str:
    """Slack's permalink form; a reply's names its thread and channel."""
    url = (f"https://{domain}.backchannel.local/archives/{channel_id}/"
           f"p{ids.format_ts(ts_us).replace('.', '')}")
    if thread_ts_us is not None:
        url += f"?thread_ts={ids.format_ts(thread_ts_us)}&cid={channel_id}"
    return url


def delayed_message_shape(row: dict[str, Any], team_id: str,
                          bot_id: str | None) -> dict[str, Any]:
    """chat.scheduleMessage's ``message``: what will be posted, which has no ts yet (Slack
    calls it a delayed_message)."""
    msg: dict[str, Any] = {"type": "delayed_message", "text": row["text"],
                           "user": row["user_id"], "team": team_id}
    if bot_id:
        msg["bot_id"] = bot_id
    for field in ("blocks", "attachments"):
        if row.get(field):
            msg[field] = json.loads(row[field])
    if row.get("thread_ts_us") is not None:
        msg["thread_ts"] = ids.format_ts(row["thread_ts_us"])
    return msg


def scheduled_message_shape(row: dict[str, Any]) -> dict[str, Any]:
    """An entry of chat.scheduledMessages.list."""
    return {"id": row["id"], "channel_id": row["channel_id"], "post_at": int(row["post_at"]),
            "date_created": int(row["date_created"]), "text": row["text"]}


def search_channel_shape(row: dict[str, Any], viewer: str) -> dict[str, Any]:
    """The ``channel`` of a search match: Slack's short form. A DM is named by the other
    member's id, as Slack names it."""
    im, mpim = bool(row.get("is_im")), bool(row.get("is_mpim"))
    private = bool(row["is_private"]) or im or mpim
    name = _im_shape(row, viewer)["user"] if im else row["name"]
    return {"id": row["id"], "is_channel": not private, "is_group": private and not im,
            "is_im": im, "is_mpim": mpim,
            "is_private": private, "is_shared": False, "is_ext_shared": False,
            "is_org_shared": False, "is_pending_ext_shared": False, "pending_shared": [],
            "name": name}


def search_match_shape(row: dict[str, Any], channel: dict[str, Any], viewer: str,
                       username: str, domain: str, text: str) -> dict[str, Any]:
    """One search.messages match from a ``messages`` row; ``text`` is the row's text,
    highlighted when asked. ``iid`` is stable per message, so pages agree."""
    message = row_to_message(row, channel["team_id"])
    match: dict[str, Any] = {
        "iid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{row['channel_id']}/{row['ts_us']}")),
        "team": channel["team_id"], "channel": search_channel_shape(channel, viewer),
        "type": "message", "user": row["user_id"], "username": username,
        "ts": message["ts"], "text": text,
        "permalink": permalink_url(domain, row["channel_id"], row["ts_us"],
                                   row.get("thread_ts_us")),
    }
    for field in ("blocks", "attachments", "thread_ts"):
        if field in message:
            match[field] = message[field]
    return match


# Slack's "no DND" values of next_dnd_start_ts / next_dnd_end_ts (what dnd.info answers for
# a user with neither a schedule nor a snooze)
NO_DND_TS = 1


def dnd_status(start: int, end: int, now: int, *, own: bool) -> dict[str, Any]:
    """Slack's DND status of a user whose last snooze ran from ``start`` to ``end`` (Unix
    seconds), seen at ``now``. We keep no DND schedules, so the only DND session is a
    running snooze: it is reported as the current DND window (``dnd_enabled``,
    ``next_dnd_*_ts``), which is all teammates see. ``own`` adds the snooze fields only
    the user itself is shown."""
    snoozing = end > now
    status: dict[str, Any] = {"dnd_enabled": snoozing,
                              "next_dnd_start_ts": start if snoozing else NO_DND_TS,
                              "next_dnd_end_ts": end if snoozing else NO_DND_TS}
    if own:
        status["snooze_enabled"] = snoozing
        if snoozing:
            status["snooze_endtime"] = end
            status["snooze_remaining"] = end - now
    return status
