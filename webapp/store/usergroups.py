"""SQL of usergroups (Slack's "subteams"), in the directory keyspace: the groups and their
members. Names and handles are unique per workspace; a handle must also differ from every
user name and channel name of the workspace (it is an @-mention)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import aiomysql

from cluster import ids
from webapp.db import Database
from webapp.store.directory import Conflict

T = TypeVar("T")

_COLUMNS = ("id, team_id, name, handle, description, created_by, updated_by, created, "
            "updated, disabled, prefs, deleted_by")


@dataclasses.dataclass(frozen=True)
class MembersChanged:
    """What usergroups.users.update did: the group's new row, its members, and the diff."""

    row: dict[str, Any]
    users: list[str]
    added: list[str]
    removed: list[str]
    previous_update: int


async def create(db: Database, team_id: str, by: str, name: str, handle: str,
                 description: str, prefs: dict[str, list[str]]) -> dict[str, Any]:
    """Raises Conflict("name_already_exists" | "handle_already_exists")."""
    now = ids.now_us() // 1_000_000
    row = {"id": ids.new_id("S"), "team_id": team_id, "name": name, "handle": handle,
           "description": description, "created_by": by, "updated_by": by, "created": now,
           "updated": now, "disabled": 0, "prefs": json.dumps(prefs), "deleted_by": None}

    async def insert(cur: aiomysql.DictCursor) -> dict[str, Any]:
        await _check_free(cur, team_id, name, handle)
        await cur.execute(
            f"INSERT INTO usergroups ({_COLUMNS}) VALUES (%(id)s, %(team_id)s, %(name)s, "
            "%(handle)s, %(description)s, %(created_by)s, %(updated_by)s, %(created)s, "
            "%(updated)s, %(disabled)s, %(prefs)s, %(deleted_by)s)", row)
        return row

    return await _unique(db.transact_directory(insert))


async def _unique(write: Awaitable[T]) -> T:
    """Run a write that may hit the name or handle keys: a concurrent create or update won
    the race past _check_free, and the key says which rule it broke."""
    try:
        return await write
    except aiomysql.IntegrityError as exc:
        raise Conflict("handle_already_exists" if "team_handle" in str(exc)
                       else "name_already_exists") from exc


async def _check_free(cur: aiomysql.DictCursor, team_id: str, name: str | None,
                      handle: str | None, exclude: str = "") -> None:
    """``name`` and ``handle`` (None: not changing) are free in the workspace; the group
    ``exclude`` (the one being renamed) does not count against itself."""
    if name is not None:
        await cur.execute("SELECT 1 FROM usergroups WHERE team_id=%s AND name=%s AND id<>%s",
                          (team_id, name, exclude))
        if await cur.fetchone():
            raise Conflict("name_already_exists")
    if handle is None:
        return
    for sql, args in (
        ("SELECT 1 FROM usergroups WHERE team_id=%s AND handle=%s AND id<>%s",
         (team_id, handle, exclude)),
        ("SELECT 1 FROM users WHERE team_id=%s AND name=%s", (team_id, handle)),
        ("SELECT 1 FROM channel_names WHERE team_id=%s AND name=%s", (team_id, handle)),
    ):
        await cur.execute(sql, args)
        if await cur.fetchone():
            raise Conflict("handle_already_exists")


async def get(db: Database, team_id: str, group_id: str) -> dict[str, Any] | None:
    async with db.directory() as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM usergroups WHERE id=%s AND team_id=%s",
                          (group_id, team_id))
        return await cur.fetchone()


async def list_groups(db: Database, team_id: str, include_disabled: bool
                      ) -> list[dict[str, Any]]:
    async with db.directory() as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM usergroups WHERE team_id=%s"
            + ("" if include_disabled else " AND disabled=0") + " ORDER BY name, id",
            (team_id,))
        return list(await cur.fetchall())


async def members(db: Database, group_ids: Sequence[str]) -> dict[str, list[str]]:
    """group id -> its member ids (sorted), for many groups in one query."""
    out: dict[str, list[str]] = {g: [] for g in group_ids}
    if not group_ids:
        return out
    async with db.directory() as cur:
        marks = ",".join(["%s"] * len(group_ids))
        await cur.execute(
            "SELECT usergroup_id, user_id FROM usergroup_members "
            f"WHERE usergroup_id IN ({marks}) ORDER BY usergroup_id, user_id", tuple(group_ids))
        for r in await cur.fetchall():
            out[r["usergroup_id"]].append(r["user_id"])
    return out


async def replace_members(db: Database, team_id: str, group_id: str, users: Sequence[str],
                          by: str) -> MembersChanged | None:
    """Make ``users`` the group's whole member list; None if the group is not there. The
    group row is locked first, so concurrent updates of one group apply one after the
    other and each diff is against the list the other left."""

    async def write(cur: aiomysql.DictCursor) -> MembersChanged | None:
        await cur.execute(f"SELECT {_COLUMNS} FROM usergroups WHERE id=%s AND team_id=%s "
                          "FOR UPDATE", (group_id, team_id))
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute("SELECT user_id FROM usergroup_members WHERE usergroup_id=%s",
                          (group_id,))
        before = {r["user_id"] for r in await cur.fetchall()}
        added = sorted(set(users) - before)
        removed = sorted(before - set(users))
        if removed:
            marks = ",".join(["%s"] * len(removed))
            await cur.execute(f"DELETE FROM usergroup_members WHERE usergroup_id=%s AND "
                              f"user_id IN ({marks})", (group_id, *removed))
        if added:
            await cur.executemany("INSERT INTO usergroup_members (usergroup_id, user_id) "
                                  "VALUES (%s, %s)", [(group_id, u) for u in added])
        previous = row["updated"]
        if added or removed:
            row = {**row, "updated": max(previous + 1, ids.now_us() // 1_000_000),
                   "updated_by": by}
            await cur.execute("UPDATE usergroups SET updated=%s, updated_by=%s WHERE id=%s",
                              (row["updated"], by, group_id))
        return MembersChanged(row, sorted(set(users)), added, removed, previous)

    return await db.transact_directory(write)


def _bumped(row: dict[str, Any], by: str, **changes: Any) -> dict[str, Any]:
    """The row with ``changes`` applied and a later ``updated`` (strictly increasing, so
    clients that keep the newest copy of a group by date_update never go back)."""
    now = ids.now_us() // 1_000_000
    return {**row, **changes, "updated": max(row["updated"] + 1, now), "updated_by": by}


async def _locked(cur: aiomysql.DictCursor, team_id: str, group_id: str
                  ) -> dict[str, Any] | None:
    await cur.execute(f"SELECT {_COLUMNS} FROM usergroups WHERE id=%s AND team_id=%s "
                      "FOR UPDATE", (group_id, team_id))
    return await cur.fetchone()


async def _write_row(cur: aiomysql.DictCursor, row: dict[str, Any]) -> None:
    await cur.execute(
        "UPDATE usergroups SET name=%(name)s, handle=%(handle)s, description=%(description)s, "
        "prefs=%(prefs)s, disabled=%(disabled)s, deleted_by=%(deleted_by)s, "
        "updated=%(updated)s, updated_by=%(updated_by)s WHERE id=%(id)s", row)


async def update_group(db: Database, team_id: str, group_id: str, by: str,
                       changes: dict[str, Any]) -> dict[str, Any] | None:
    """Change some of name, handle, description and prefs (a dict); the new row, or None
    if the group is not there. Raises Conflict like :func:`create`. The row is locked
    first, so two updates of one group apply one after the other."""

    async def write(cur: aiomysql.DictCursor) -> dict[str, Any] | None:
        row = await _locked(cur, team_id, group_id)
        if row is None:
            return None
        name, handle = changes.get("name"), changes.get("handle")
        await _check_free(cur, team_id, None if name == row["name"] else name,
                          None if handle == row["handle"] else handle, exclude=group_id)
        stored = {**changes}
        if "prefs" in stored:
            stored["prefs"] = json.dumps(stored["prefs"])
        if all(row[k] == v for k, v in stored.items()):
            return row  # nothing to change: date_update stays
        row = _bumped(row, by, **stored)
        await _write_row(cur, row)
        return row

    return await _unique(db.transact_directory(write))


async def set_disabled(db: Database, team_id: str, group_id: str, by: str,
                       disabled: bool) -> dict[str, Any] | None:
    """Disable (``disabled`` becomes when, ``deleted_by`` who) or enable the group; the new
    row, or None if it is not there. Already in that state: the row as it is."""

    async def write(cur: aiomysql.DictCursor) -> dict[str, Any] | None:
        row = await _locked(cur, team_id, group_id)
        if row is None or bool(row["disabled"]) == disabled:
            return row
        row = _bumped(row, by, deleted_by=by if disabled else None)
        row["disabled"] = row["updated"] if disabled else 0
        await _write_row(cur, row)
        return row

    return await db.transact_directory(write)
