"""Slack object shapes built from rows: what every method and event says about a channel,
a message or a user. One place, so a field added here is right everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cluster import ids

if TYPE_CHECKING:
    from webapp.store.directory import Identity


def channel_shape(row: dict[str, Any], is_member: bool | None = None) -> dict[str, Any]:
    private = bool(row["is_private"])
    shape: dict[str, Any] = {
        "id": row["id"], "name": row["name"], "name_normalized": row["name"],
        "is_channel": not private, "is_group": private, "is_im": False, "is_mpim": False,
        "is_private": private, "is_archived": bool(row["is_archived"]), "is_general": False,
        "is_shared": False, "is_ext_shared": False, "is_org_shared": False,
        "created": row["created"], "creator": row["creator"],
        "context_team_id": row["team_id"], "shared_team_ids": [row["team_id"]],
        "topic": {"value": "", "creator": "", "last_set": 0},
        "purpose": {"value": "", "creator": "", "last_set": 0},
    }
    if is_member is not None:
        shape["is_member"] = is_member
    return shape


def message_shape(
    who: Identity, text: str, ts: str, thread_ts_us: int | None, client_msg_id: str | None
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "message", "user": who.user_id, "text": text, "ts": ts,
                           "team": who.team_id}
    if who.bot_id:
        msg["bot_id"] = who.bot_id
    if client_msg_id:
        msg["client_msg_id"] = client_msg_id
    if thread_ts_us is not None:
        msg["thread_ts"] = ids.format_ts(thread_ts_us)
    return msg


def row_to_message(row: dict[str, Any], team_id: str) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "message", "user": row["user_id"], "text": row["text"],
                           "ts": ids.format_ts(row["ts_us"]), "team": team_id}
    if row["bot_id"]:
        msg["bot_id"] = row["bot_id"]
    if row["client_msg_id"]:
        msg["client_msg_id"] = row["client_msg_id"]
    if row["thread_ts_us"] is not None:
        msg["thread_ts"] = ids.format_ts(row["thread_ts_us"])
    return msg

