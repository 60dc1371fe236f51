"""SQL of the directory keyspace (unsharded): workspaces, users, tokens."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiomysql

from cluster import ids
from webapp.db import Database


@dataclasses.dataclass(frozen=True)
class Identity:
    user_id: str
    team_id: str
    user_name: str
    team_name: str
    team_domain: str
    is_bot: bool
    bot_id: str | None
    is_admin: bool = False


async def create_team(db: Database, name: str, domain: str) -> dict[str, Any]:
    team = {"id": ids.new_id("T"), "name": name, "domain": domain}

    async def insert(cur: aiomysql.DictCursor) -> None:
        await cur.execute(
            "INSERT INTO teams (id, name, domain, created) VALUES (%s, %s, %s, %s)",
            (team["id"], name, domain, ids.now_us() // 1_000_000),
        )

    await db.transact_directory(insert)
    return team


async def create_user(
    db: Database, team_id: str, name: str, *, is_bot: bool = False
) -> tuple[dict[str, Any], str]:
    """Returns the user and its token; only the token's hash is stored."""
    user = {"id": ids.new_id("U"), "team_id": team_id, "name": name, "is_bot": is_bot,
            "bot_id": ids.new_id("B") if is_bot else None}
    token = ids.new_token("xoxb" if is_bot else "xoxp")
    created = ids.now_us() // 1_000_000

    async def insert(cur: aiomysql.DictCursor) -> None:
        await cur.execute(
            "INSERT INTO users (id, team_id, name, real_name, is_bot, bot_id, created) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (user["id"], team_id, name, name, int(is_bot), user["bot_id"], created),
        )
        await cur.execute(
            "INSERT INTO tokens (token_hash, user_id, team_id, kind, created) "
            "VALUES (%s, %s, %s, %s, %s)",
            (ids.hash_token(token), user["id"], team_id, "bot" if is_bot else "user", created),
        )

    await db.transact_directory(insert)
    return user, token


async def identity_for_token(db: Database, token: str) -> Identity | None:
    async with db.directory() as cur:
        await cur.execute(
            "SELECT u.id, u.team_id, u.name, u.is_bot, u.bot_id, u.is_admin, t.name AS team_name, "
            "t.domain FROM tokens k JOIN users u ON u.id = k.user_id "
            "JOIN teams t ON t.id = u.team_id WHERE k.token_hash=%s AND u.deleted=0",
            (ids.hash_token(token),),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return Identity(row["id"], row["team_id"], row["name"], row["team_name"], row["domain"],
                    bool(row["is_bot"]), row["bot_id"], bool(row["is_admin"]))


async def user_exists(db: Database, team_id: str, user_id: str) -> bool:
    async with db.directory() as cur:
        await cur.execute("SELECT 1 FROM users WHERE id=%s AND team_id=%s", (user_id, team_id))
        return await cur.fetchone() is not None

