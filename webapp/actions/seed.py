"""Seeding: demo and benchmark workspaces, and more users for an existing one.

Every seeded user has a full profile (display and real name, an email at
``<domain>.example``, a time zone); user1 of a new workspace is its admin and owner and
creates #general, which everyone joins. Users added to an existing workspace are announced
with ``team_join`` and join its #general like anyone else.
"""

from __future__ import annotations

import re
from typing import Any

from webapp import store
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack.shapes import channel_shape, user_shape
from webapp.store import directory, seeding

# seeded users' time zones, in turn, so clients show a realistic spread
ZONES = ("America/Los_Angeles", "America/New_York", "Europe/London", "Europe/Berlin",
         "Asia/Tokyo", "UTC")
_NUMBERED = re.compile(r"^user(\d{1,9})$")


def email_domain(domain: str) -> str:
    return (re.sub(r"[^a-z0-9\-]+", "-", domain.lower()).strip("-") or "demo") + ".example"


def person(i: int, domain: str, *, admin: bool = False) -> directory.NewUser:
    return directory.NewUser(
        f"user{i}", real_name=f"User {i}", display_name=f"user{i}", first_name="User",
        last_name=str(i), email=f"user{i}@{email_domain(domain)}", tz=ZONES[(i - 1) % len(ZONES)],
        is_admin=admin, is_owner=admin)


BOT = directory.NewUser("backchannel-bot", real_name="Backchannel Bot", is_bot=True)


async def create_people(rt: Runtime, team: dict[str, Any], n: int
                        ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """user1..userN (user1 the admin and owner) and the bot: (users, bot), each with its
    row's id and name and its token."""
    made = await directory.create_users(
        rt.db, team["id"],
        [person(i, team["domain"], admin=i == 1) for i in range(1, n + 1)] + [BOT])
    users = [{"id": row["id"], "name": row["name"], "token": token}
             for row, token in made[:-1]]
    bot_row, bot_token = made[-1]
    return users, {"id": bot_row["id"], "bot_id": bot_row["bot_id"], "name": bot_row["name"],
                   "token": bot_token}


async def join_general(rt: Runtime, general: dict[str, Any], members: list[str]) -> None:
    await seeding.join_many(rt.db, general, members, channel_shape)


async def add_users(rt: Runtime, team_id: str, n: int) -> dict[str, Any]:
    """N more users for an existing workspace, numbered after its highest ``userK``."""
    team = await directory.get_team(rt.db, team_id)
    if team is None:
        raise ApiError("team_not_found")
    taken = [int(m.group(1)) for name in await directory.user_names(rt.db, team_id, "user")
             if (m := _NUMBERED.match(name))]
    start = max(taken, default=0) + 1
    made = await directory.create_users(
        rt.db, team_id, [person(i, team["domain"]) for i in range(start, start + n)])
    await seeding.announce_joins(rt.db, team_id, [user_shape(row) for row, _ in made])
    channels = []
    general_id = await directory.channel_by_name(rt.db, team_id, "general")
    general = await store.get_channel(rt.db, general_id) if general_id else None
    if general is not None:
        await join_general(rt, general, [row["id"] for row, _ in made])
        channels.append({"id": general["id"], "name": "general"})
    bot = await directory.first_bot(rt.db, team_id)
    return {"team": {"id": team["id"], "name": team["name"], "domain": team["domain"]},
            "users": [{"id": row["id"], "name": row["name"], "token": token}
                      for row, token in made],
            # an existing bot's token cannot be given again: only its hash is stored
            "bot": bot and {"id": bot["id"], "bot_id": bot["bot_id"], "name": bot["name"]},
            "channels": channels}
