"""SQL of the directory keyspace (unsharded): workspaces, users and their profiles, tokens,
per-user prefs and custom emoji."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import aiomysql

from cluster import ids
from webapp.db import Database

# what a Slack user object is built from (webapp.slack.shapes.user_shape)
USER_COLUMNS = (
    "id, team_id, name, real_name, display_name, email, title, phone, first_name, last_name, "
    "status_text, status_emoji, status_expiration, tz, is_admin, is_owner, is_bot, bot_id, "
    "deleted, created, updated"
)
# the profile fields users.profile.set may write, and their column sizes
PROFILE_COLUMNS: dict[str, int] = {
    "real_name": 80, "display_name": 80, "first_name": 80, "last_name": 80, "title": 255,
    "phone": 64, "email": 255, "status_text": 100, "status_emoji": 100,
}
# one transaction inserts at most this many users (and their tokens): a 5,000-user seed is
# ten short transactions, not one long one holding the directory's locks
USER_CHUNK = 500


class Conflict(Exception):
    """A uniqueness rule of the directory was hit; ``args[0]`` names it."""


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


@dataclasses.dataclass(frozen=True)
class NewUser:
    """A user to create, with the profile it starts with."""

    name: str
    real_name: str = ""
    display_name: str = ""
    first_name: str = ""
    last_name: str = ""
    email: str | None = None
    tz: str = "UTC"
    is_bot: bool = False
    is_admin: bool = False
    is_owner: bool = False


async def create_team(db: Database, name: str, domain: str) -> dict[str, Any]:
    team = {"id": ids.new_id("T"), "name": name, "domain": domain}

    async def insert(cur: aiomysql.DictCursor) -> None:
        await cur.execute(
            "INSERT INTO teams (id, name, domain, created) VALUES (%s, %s, %s, %s)",
            (team["id"], name, domain, ids.now_us() // 1_000_000),
        )

    await db.transact_directory(insert)
    return team


async def get_team(db: Database, team_id: str) -> dict[str, Any] | None:
    async with db.directory() as cur:
        await cur.execute("SELECT id, name, domain, created FROM teams WHERE id=%s", (team_id,))
        return await cur.fetchone()


async def create_user(
    db: Database, team_id: str, name: str, *, is_bot: bool = False
) -> tuple[dict[str, Any], str]:
    """Returns the user and its token; only the token's hash is stored."""
    [(user, token)] = await create_users(db, team_id, [NewUser(name, real_name=name,
                                                               is_bot=is_bot)])
    return user, token


async def create_users(
    db: Database, team_id: str, users: Sequence[NewUser]
) -> list[tuple[dict[str, Any], str]]:
    """Many users with their tokens, USER_CHUNK per transaction; returns (row, token) pairs,
    each row as :func:`get_user` reads it. A chunk commits whole or not at all."""
    now = ids.now_us() // 1_000_000
    made: list[tuple[dict[str, Any], str]] = []
    for new in users:
        row = {"id": ids.new_id("U"), "team_id": team_id, "name": new.name,
               "real_name": new.real_name, "display_name": new.display_name,
               "email": new.email.lower() if new.email else None, "title": "", "phone": "",
               "first_name": new.first_name, "last_name": new.last_name, "status_text": "",
               "status_emoji": "", "status_expiration": 0, "tz": new.tz,
               "is_admin": int(new.is_admin), "is_owner": int(new.is_owner),
               "is_bot": int(new.is_bot), "bot_id": ids.new_id("B") if new.is_bot else None,
               "deleted": 0, "created": now, "updated": now}
        made.append((row, ids.new_token("xoxb" if new.is_bot else "xoxp")))
    for start in range(0, len(made), USER_CHUNK):
        chunk = made[start:start + USER_CHUNK]
        await db.transact_directory(lambda cur, chunk=chunk: _insert_users(cur, chunk))
    return made


async def _insert_users(cur: aiomysql.DictCursor,
                        chunk: list[tuple[dict[str, Any], str]]) -> None:
    await cur.executemany(
        "INSERT INTO users (id, team_id, name, real_name, display_name, email, first_name, "
        "last_name, tz, is_admin, is_owner, is_bot, bot_id, created, updated) VALUES "
        "(%(id)s, %(team_id)s, %(name)s, %(real_name)s, %(display_name)s, %(email)s, "
        "%(first_name)s, %(last_name)s, %(tz)s, %(is_admin)s, %(is_owner)s, %(is_bot)s, "
        "%(bot_id)s, %(created)s, %(updated)s)", [row for row, _ in chunk])
    await cur.executemany(
        "INSERT INTO tokens (token_hash, user_id, team_id, kind, created) "
        "VALUES (%s, %s, %s, %s, %s)",
        [(ids.hash_token(token), row["id"], row["team_id"], "bot" if row["is_bot"] else "user",
          row["created"]) for row, token in chunk])


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


async def identity_for_user(db: Database, user_id: str) -> Identity | None:
    """The identity of an active user, by id: a gateway posts over RTM on behalf of the
    user its ticket named (it holds no token)."""
    async with db.directory() as cur:
        await cur.execute(
            "SELECT u.id, u.team_id, u.name, u.is_bot, u.bot_id, u.is_admin, t.name AS team_name, "
            "t.domain FROM users u JOIN teams t ON t.id = u.team_id "
            "WHERE u.id=%s AND u.deleted=0", (user_id,),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return Identity(row["id"], row["team_id"], row["name"], row["team_name"], row["domain"],
                    bool(row["is_bot"]), row["bot_id"], bool(row["is_admin"]))


async def delete_token(db: Database, token: str) -> bool:
    """Forget a token (auth.revoke); whether it was there."""

    async def delete(cur: aiomysql.DictCursor) -> bool:
        await cur.execute("DELETE FROM tokens WHERE token_hash=%s", (ids.hash_token(token),))
        return cur.rowcount > 0

    return await db.transact_directory(delete)


async def user_exists(db: Database, team_id: str, user_id: str) -> bool:
    async with db.directory() as cur:
        await cur.execute("SELECT 1 FROM users WHERE id=%s AND team_id=%s", (user_id, team_id))
        return await cur.fetchone() is not None


async def get_user(db: Database, team_id: str, user_id: str) -> dict[str, Any] | None:
    """The user's row if it belongs to ``team_id`` (another workspace's user reads as none)."""
    async with db.directory() as cur:
        await cur.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id=%s AND team_id=%s",
                          (user_id, team_id))
        return await cur.fetchone()


async def user_by_email(db: Database, team_id: str, email: str) -> dict[str, Any] | None:
    async with db.directory() as cur:
        await cur.execute(f"SELECT {USER_COLUMNS} FROM users WHERE team_id=%s AND email=%s",
                          (team_id, email.lower()))
        return await cur.fetchone()


async def list_users(db: Database, team_id: str, after: str, limit: int
                     ) -> list[dict[str, Any]]:
    """Up to ``limit`` users with ids above ``after``, by id (the users.list cursor)."""
    async with db.directory() as cur:
        await cur.execute(
            f"SELECT {USER_COLUMNS} FROM users WHERE team_id=%s AND id > %s ORDER BY id "
            "LIMIT %s", (team_id, after, limit))
        return list(await cur.fetchall())


async def existing_users(db: Database, team_id: str, user_ids: Sequence[str]) -> set[str]:
    """Which of ``user_ids`` are active users of ``team_id``."""
    if not user_ids:
        return set()
    async with db.directory() as cur:
        marks = ",".join(["%s"] * len(user_ids))
        await cur.execute(
            f"SELECT id FROM users WHERE team_id=%s AND deleted=0 AND id IN ({marks})",
            (team_id, *user_ids))
        return {r["id"] for r in await cur.fetchall()}


async def user_names(db: Database, team_id: str, prefix: str) -> list[str]:
    async with db.directory() as cur:
        await cur.execute("SELECT name FROM users WHERE team_id=%s AND name LIKE %s",
                          (team_id, prefix.replace("%", r"\%").replace("_", r"\_") + "%"))
        return [r["name"] for r in await cur.fetchall()]


async def first_bot(db: Database, team_id: str) -> dict[str, Any] | None:
    async with db.directory() as cur:
        await cur.execute(
            f"SELECT {USER_COLUMNS} FROM users WHERE team_id=%s AND is_bot=1 "
            "ORDER BY created, id LIMIT 1", (team_id,))
        return await cur.fetchone()


async def bot_user(db: Database, team_id: str, bot_id: str) -> dict[str, Any] | None:
    async with db.directory() as cur:
        await cur.execute(f"SELECT {USER_COLUMNS} FROM users WHERE team_id=%s AND bot_id=%s",
                          (team_id, bot_id))
        return await cur.fetchone()


async def channel_by_name(db: Database, team_id: str, name: str) -> str | None:
    """The id of the workspace's channel called ``name`` (the unsharded name lookup)."""
    async with db.directory() as cur:
        await cur.execute("SELECT channel_id FROM channel_names WHERE team_id=%s AND name=%s",
                          (team_id, name))
        row = await cur.fetchone()
    return row["channel_id"] if row else None


async def update_profile(db: Database, team_id: str, user_id: str,
                         fields: dict[str, Any]) -> dict[str, Any]:
    """Write profile columns (names from PROFILE_COLUMNS, or status_expiration) and bump
    ``updated``; returns the user's new row. Raises Conflict("email_taken")."""
    assert set(fields) <= set(PROFILE_COLUMNS) | {"status_expiration"}

    async def write(cur: aiomysql.DictCursor) -> dict[str, Any]:
        if fields:
            sets = ", ".join(f"{name}=%s" for name in fields)
            await cur.execute(
                f"UPDATE users SET {sets}, updated=GREATEST(updated + 1, %s) "
                "WHERE id=%s AND team_id=%s",
                (*fields.values(), ids.now_us() // 1_000_000, user_id, team_id))
        await cur.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id=%s AND team_id=%s",
                          (user_id, team_id))
        return await cur.fetchone()

    try:
        return await db.transact_directory(write)
    except aiomysql.IntegrityError as exc:
        raise Conflict("email_taken") from exc


async def manual_away(db: Database, team_id: str, user_id: str) -> bool | None:
    """Whether the user set itself away (users.setPresence); None: no such user here."""
    async with db.directory() as cur:
        await cur.execute("SELECT manual_away FROM users WHERE id=%s AND team_id=%s",
                          (user_id, team_id))
        row = await cur.fetchone()
    return None if row is None else bool(row["manual_away"])


async def set_manual_away(db: Database, user_id: str, away: bool) -> None:
    async def write(cur: aiomysql.DictCursor) -> None:
        await cur.execute("UPDATE users SET manual_away=%s WHERE id=%s", (int(away), user_id))

    await db.transact_directory(write)


async def get_prefs(db: Database, user_id: str) -> dict[str, Any]:
    async with db.directory() as cur:
        await cur.execute("SELECT prefs FROM user_prefs WHERE user_id=%s", (user_id,))
        row = await cur.fetchone()
    return json.loads(row["prefs"]) if row else {}


async def merge_prefs(db: Database, user_id: str, changes: dict[str, Any],
                      max_prefs: int) -> dict[str, Any] | None:
    """Merge ``changes`` into the user's stored prefs; returns them all, or None (nothing
    written) when the result would hold more than ``max_prefs`` names."""

    async def write(cur: aiomysql.DictCursor) -> dict[str, Any] | None:
        await cur.execute("SELECT prefs FROM user_prefs WHERE user_id=%s FOR UPDATE",
                          (user_id,))
        row = await cur.fetchone()
        prefs = {**(json.loads(row["prefs"]) if row else {}), **changes}
        if len(prefs) > max_prefs:
            return None
        await cur.execute(
            "INSERT INTO user_prefs (user_id, prefs) VALUES (%s, %s) "
            "ON DUPLICATE KEY UPDATE prefs=VALUES(prefs)",
            (user_id, json.dumps(prefs, separators=(",", ":"))))
        return prefs

    return await db.transact_directory(write)


async def list_emoji(db: Database, team_id: str) -> tuple[dict[str, str], int]:
    """The workspace's custom emoji (name -> URL or ``alias:<name>``) and when they last
    changed (0: never)."""
    async with db.directory() as cur:
        await cur.execute("SELECT name, value, updated FROM emoji WHERE team_id=%s "
                          "ORDER BY name", (team_id,))
        rows = await cur.fetchall()
    return {r["name"]: r["value"] for r in rows}, max((r["updated"] for r in rows), default=0)


# --- do-not-disturb snooze: (start, end) in Unix seconds; active while end > now --------------


async def get_snooze(db: Database, team_id: str, user_id: str) -> tuple[int, int] | None:
    """The user's last snooze window; None: no such user in ``team_id``."""
    async with db.directory() as cur:
        await cur.execute("SELECT snooze_start, snooze_end FROM users WHERE id=%s AND "
                          "team_id=%s", (user_id, team_id))
        row = await cur.fetchone()
    return None if row is None else (int(row["snooze_start"]), int(row["snooze_end"]))


async def team_snoozes(db: Database, team_id: str, user_ids: Sequence[str]
                       ) -> dict[str, tuple[int, int]]:
    """Snooze windows of those of ``user_ids`` that are users of ``team_id``; the others
    are left out (another workspace's user does not exist for the caller)."""
    if not user_ids:
        return {}
    async with db.directory() as cur:
        marks = ",".join(["%s"] * len(user_ids))
        await cur.execute(
            f"SELECT id, snooze_start, snooze_end FROM users WHERE team_id=%s "
            f"AND id IN ({marks})", (team_id, *user_ids))
        rows = await cur.fetchall()
    return {r["id"]: (int(r["snooze_start"]), int(r["snooze_end"])) for r in rows}


async def set_snooze(db: Database, user_id: str, now: int, end: int) -> tuple[int, int]:
    """Snooze until ``end``: a running snooze keeps its start (Slack adjusts its duration),
    otherwise it starts ``now``. Returns the new window."""

    async def write(cur: aiomysql.DictCursor) -> tuple[int, int]:
        await cur.execute(
            "UPDATE users SET snooze_start=IF(snooze_end > %s, snooze_start, %s), "
            "snooze_end=%s WHERE id=%s", (now, now, end, user_id))
        await cur.execute("SELECT snooze_start, snooze_end FROM users WHERE id=%s",
                          (user_id,))
        row = await cur.fetchone()
        return int(row["snooze_start"]), int(row["snooze_end"])

    return await db.transact_directory(write)


async def end_snooze(db: Database, user_id: str, now: int) -> bool:
    """End the user's snooze; whether one was active (only an active one is touched, in
    one statement, so two racing calls cannot both see it end)."""

    async def write(cur: aiomysql.DictCursor) -> bool:
        await cur.execute("UPDATE users SET snooze_start=0, snooze_end=0 "
                          "WHERE id=%s AND snooze_end > %s", (user_id, now))
        return cur.rowcount > 0

    return await db.transact_directory(write)
