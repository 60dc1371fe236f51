"""Slack object shapes built from rows."""

from __future__ import annotations

from typing import Any


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
