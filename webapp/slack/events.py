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


def member_joined_channel(channel: dict[str, Any], user_id: str, ts: str) -> dict[str, Any]:
    return {"type": "member_joined_channel", "user": user_id, "channel": channel["id"],
            "channel_type": _kind_of(channel), "team": channel["team_id"], "event_ts": ts}


def channel_joined(shape: dict[str, Any], ts: str, at: int | None = None) -> dict[str, Any]:
    """To the joining user's personal stream: ``channel_joined`` (``group_joined`` for a
    private channel). ``at``, the channel's seq before the join, lets the gateway subscribe
    from the join itself."""
    kind = "group_joined" if shape.get("is_private") else "channel_joined"
    event: dict[str, Any] = {"type": kind, "channel": shape, "event_ts": ts}
    return event if at is None else {**event, "_at": at}
