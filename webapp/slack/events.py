"""One constructor per RTM event type, so every place that emits an event emits the same
shape. Each takes the event's ``ts`` (the stream assigns it when the event is appended) as
``event_ts``.

An event may carry ``_at`` (internal, stripped before clients see it: cluster/wire.py).
"""

from __future__ import annotations

from typing import Any


def _kind_of(channel: dict[str, Any]) -> str:
    if channel.get("is_im"):
        return "D"
    if channel.get("is_mpim"):
        return "G"
    return "G" if channel.get("is_private") else "C"


# --- messages: a post, and the hidden subtypes that tell clients a message changed ---------


def message(msg: dict[str, Any], channel_id: str, ts: str,
            root: dict[str, Any] | None = None) -> dict[str, Any]:
    """A posted message (any visible subtype: me_message, thread_broadcast with its
    ``root``, the thread parent as it now stands)."""
    event = {**msg, "channel": channel_id, "event_ts": ts}
    return event if root is None else {**event, "root": root}


def message_replied(parent: dict[str, Any], channel_id: str, ts: str) -> dict[str, Any]:
    """A thread got a reply: ``message`` is the parent with its new reply summary."""
    return {"type": "message", "subtype": "message_replied", "hidden": True,
            "channel": channel_id, "message": parent, "ts": ts, "event_ts": ts}


def message_changed(new: dict[str, Any], previous: dict[str, Any], channel_id: str,
                    ts: str) -> dict[str, Any]:
    """An edit (``message.edited``), a thread summary that shrank, or a parent that became
    a tombstone."""
    return {"type": "message", "subtype": "message_changed", "hidden": True,
            "channel": channel_id, "message": new, "previous_message": previous,
            "ts": ts, "event_ts": ts}


def message_deleted(previous: dict[str, Any], channel_id: str, ts: str) -> dict[str, Any]:
    return {"type": "message", "subtype": "message_deleted", "hidden": True,
            "channel": channel_id, "deleted_ts": previous["ts"],
            "previous_message": previous, "ts": ts, "event_ts": ts}


def ephemeral_message(msg: dict[str, Any], channel_id: str) -> dict[str, Any]:
    """chat.postEphemeral, to one user's personal stream: never stored, never ordered."""
    return {**msg, "channel": channel_id, "is_ephemeral": True, "event_ts": msg["ts"]}


# --- reactions and pins: to the message's channel stream ------------------------------------


def _reaction(kind: str, user_id: str, name: str, item_user: str, channel_id: str,
              msg_ts: str, ts: str) -> dict[str, Any]:
    return {"type": kind, "user": user_id, "reaction": name, "item_user": item_user,
            "item": {"type": "message", "channel": channel_id, "ts": msg_ts}, "event_ts": ts}


def reaction_added(user_id: str, name: str, item_user: str, channel_id: str, msg_ts: str,
                   ts: str) -> dict[str, Any]:
    """``user_id`` reacted with ``name`` to the message ``msg_ts`` of ``item_user``."""
    return _reaction("reaction_added", user_id, name, item_user, channel_id, msg_ts, ts)


def reaction_removed(user_id: str, name: str, item_user: str, channel_id: str, msg_ts: str,
                     ts: str) -> dict[str, Any]:
    return _reaction("reaction_removed", user_id, name, item_user, channel_id, msg_ts, ts)


def pin_added(user_id: str, channel_id: str, item: dict[str, Any], ts: str) -> dict[str, Any]:
    """``item`` is shapes.pin_item: the message with who pinned it and when."""
    return {"type": "pin_added", "user": user_id, "channel_id": channel_id, "item": item,
            "event_ts": ts}


def pin_removed(user_id: str, channel_id: str, item: dict[str, Any], has_pins: bool,
                ts: str) -> dict[str, Any]:
    """``has_pins``: whether the channel still has a pinned item."""
    return {"type": "pin_removed", "user": user_id, "channel_id": channel_id, "item": item,
            "has_pins": has_pins, "event_ts": ts}


def member_joined_channel(channel: dict[str, Any], user_id: str, ts: str,
                          inviter: str | None = None) -> dict[str, Any]:
    event = {"type": "member_joined_channel", "user": user_id, "channel": channel["id"],
             "channel_type": _kind_of(channel), "team": channel["team_id"], "event_ts": ts}
    return event if inviter is None else {**event, "inviter": inviter}


def channel_joined(shape: dict[str, Any], ts: str, at: int | None = None) -> dict[str, Any]:
    """To the joining user's personal stream: ``channel_joined`` (``group_joined`` for a
    private channel). ``at``, the channel's seq before the join, lets the gateway subscribe
    from the join itself."""
    kind = "group_joined" if shape.get("is_private") else "channel_joined"
    event: dict[str, Any] = {"type": kind, "channel": shape, "event_ts": ts}
    return event if at is None else {**event, "_at": at}


# --- conversations: lifecycle, membership and read state ----------------------------------
# Public channels' lifecycle goes to the workspace stream, a private channel's to its own
# stream (members only); what concerns one user goes to that user's personal stream.


def _private(channel: dict[str, Any]) -> bool:
    return bool(channel.get("is_private") or channel.get("is_mpim") or channel.get("is_im"))


def member_left_channel(channel: dict[str, Any], user_id: str, ts: str) -> dict[str, Any]:
    """To the channel's stream when a member leaves or is removed."""
    return {"type": "member_left_channel", "user": user_id, "channel": channel["id"],
            "channel_type": _kind_of(channel), "team": channel["team_id"], "event_ts": ts}


def channel_left(channel: dict[str, Any], actor: str, ts: str) -> dict[str, Any]:
    """To the personal stream of the one who left or was removed (``actor`` did it):
    ``channel_left`` or ``group_left``; the gateway unsubscribes that user's sockets."""
    kind = "group_left" if _private(channel) else "channel_left"
    return {"type": kind, "channel": channel["id"], "actor_id": actor, "event_ts": ts}


def channel_created(shape: dict[str, Any], ts: str) -> dict[str, Any]:
    """A public channel was created: to the workspace stream."""
    return {"type": "channel_created", "channel": shape, "event_ts": ts}


def channel_rename(channel: dict[str, Any], ts: str) -> dict[str, Any]:
    """``channel_rename`` (workspace stream) or ``group_rename`` (the channel's stream)."""
    kind = "group_rename" if _private(channel) else "channel_rename"
    return {"type": kind, "channel": {
        "id": channel["id"], "name": channel["name"], "name_normalized": channel["name"],
        "created": channel["created"], "is_channel": not _private(channel),
        "is_mpim": bool(channel.get("is_mpim"))}, "event_ts": ts}


def channel_archive(channel: dict[str, Any], user_id: str, ts: str) -> dict[str, Any]:
    kind = "group_archive" if _private(channel) else "channel_archive"
    return {"type": kind, "channel": channel["id"], "user": user_id, "is_moved": 0,
            "event_ts": ts}


def channel_unarchive(channel: dict[str, Any], user_id: str, ts: str) -> dict[str, Any]:
    if _private(channel):
        return {"type": "group_unarchive", "channel": channel["id"], "user": user_id,
                "actor_id": user_id, "event_ts": ts}
    return {"type": "channel_unarchive", "channel": channel["id"], "user": user_id,
            "event_ts": ts}


def channel_marked(channel: dict[str, Any], ts_read: str, unread: int, unread_display: int,
                   ts: str) -> dict[str, Any]:
    """The reader's read position moved: to the reader's personal stream, so the reader's
    other sockets follow. ``channel_marked``, ``group_marked``, ``im_marked`` or
    ``mpim_marked`` by the kind of conversation."""
    if channel.get("is_im"):
        kind = "im_marked"
    elif channel.get("is_mpim"):
        kind = "mpim_marked"
    else:
        kind = "group_marked" if channel.get("is_private") else "channel_marked"
    return {"type": kind, "channel": channel["id"], "ts": ts_read,
            "unread_count": unread, "unread_count_display": unread_display,
            "num_mentions": 0, "num_mentions_display": 0, "mention_count": 0,
            "mention_count_display": 0, "event_ts": ts}


def im_created(shape: dict[str, Any], ts: str) -> dict[str, Any]:
    """A DM was created: to each member's personal stream (the gateway subscribes the
    member's sockets to it). ``user`` is the other member, as in the channel object."""
    return {"type": "im_created", "user": shape.get("user", ""), "channel": shape,
            "event_ts": ts, "_at": 0}


def mpim_joined(shape: dict[str, Any], ts: str) -> dict[str, Any]:
    """A group DM was created with this user in it: to each member's personal stream."""
    return {"type": "mpim_joined", "channel": shape, "event_ts": ts, "_at": 0}


def dm_opened(channel: dict[str, Any], user_id: str, ts: str) -> dict[str, Any]:
    """``im_open`` / ``mpim_open``: the DM is back in the user's sidebar (personal stream)."""
    kind = "im_open" if channel.get("is_im") else "mpim_open"
    return {"type": kind, "user": user_id, "channel": channel["id"], "event_ts": ts}


def dm_closed(channel: dict[str, Any], user_id: str, ts: str) -> dict[str, Any]:
    """``im_close`` / ``mpim_close``: the user closed the DM (personal stream)."""
    kind = "im_close" if channel.get("is_im") else "mpim_close"
    return {"type": kind, "user": user_id, "channel": channel["id"], "event_ts": ts}


# --- people: the workspace's users, usergroups, and one user's own settings ----------------
# user_change, team_join, dnd_updated_user and subteam_* go to the workspace stream;
# pref_change, manual_presence_change and dnd_updated to the user's personal stream.


def user_change(user: dict[str, Any], ts: str) -> dict[str, Any]:
    """A user's profile or status changed; ``user`` is the whole user object."""
    return {"type": "user_change", "user": user, "cache_ts": user["updated"], "event_ts": ts}


def team_join(user: dict[str, Any], ts: str) -> dict[str, Any]:
    return {"type": "team_join", "user": user, "cache_ts": user["updated"], "event_ts": ts}


def pref_change(name: str, value: Any, ts: str) -> dict[str, Any]:
    return {"type": "pref_change", "name": name, "value": value, "event_ts": ts}


def manual_presence_change(presence: str, ts: str) -> dict[str, Any]:
    """users.setPresence: ``away`` or ``active`` (what ``auto`` reads as)."""
    return {"type": "manual_presence_change", "presence": presence, "event_ts": ts}


def dnd_updated(user_id: str, status: dict[str, Any], ts: str) -> dict[str, Any]:
    """To the user's own sockets: ``status`` with the snooze fields."""
    return {"type": "dnd_updated", "user": user_id, "dnd_status": status, "event_ts": ts}


def dnd_updated_user(user_id: str, status: dict[str, Any], ts: str) -> dict[str, Any]:
    """To the workspace: ``status`` without the snooze fields."""
    return {"type": "dnd_updated_user", "user": user_id, "dnd_status": status,
            "event_ts": ts}


def subteam_created(subteam: dict[str, Any], ts: str) -> dict[str, Any]:
    return {"type": "subteam_created", "subteam": subteam, "event_ts": ts}


def subteam_updated(subteam: dict[str, Any], ts: str) -> dict[str, Any]:
    return {"type": "subteam_updated", "subteam": subteam, "event_ts": ts}


def subteam_members_changed(subteam: dict[str, Any], previous_update: int,
                            added: list[str], removed: list[str], ts: str) -> dict[str, Any]:
    """Slack sends the counts as strings."""
    return {"type": "subteam_members_changed", "subteam_id": subteam["id"],
            "team_id": subteam["team_id"], "date_previous_update": previous_update,
            "date_update": subteam["date_update"], "added_users": added,
            "added_users_count": str(len(added)), "removed_users": removed,
            "removed_users_count": str(len(removed)), "event_ts": ts}
