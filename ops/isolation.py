"""What keeps two clusters on one machine apart: a Redis prefix that no other live cluster
uses, and a database prefix the SQL user may write to. Both are checked before `up` starts a
process or writes a key, so a refused `up` leaves everything as it was."""

from __future__ import annotations

import re
from collections.abc import Collection

import redis

from cluster.settings import Settings
from ops.errors import ClusterError
from ops.leases import describe, live_leases

# 1044: no rights on the database, 1045: login refused, 1142: a command denied on a table
DB_DENIED = (1044, 1045, 1142)
DB_UNREACHABLE = (2002, 2003, 2005, 2006, 2013)
SHOWN = 6  # processes named in the refusal; the rest are counted


def check_prefix_free(settings: Settings, own_pids: Collection[int] = ()) -> None:
    """Refuse when a process that is not ours holds a live lease under our Redis prefix:
    two clusters on one prefix would share (and fight over) one ring and one registry."""
    try:
        leases = live_leases(settings)
    except redis.RedisError as exc:
        raise ClusterError(f"cannot reach Redis at {settings.redis_url}: {exc}") from None
    others = [describe(role, name, entry) for role, entries in leases.items()
              for name, entry in entries.items() if entry.get("pid") not in own_pids]
    if not others:
        return
    listed = ", ".join(others[:SHOWN]) + (f" and {len(others) - SHOWN} more"
                                          if len(others) > SHOWN else "")
    raise ClusterError(
        f"Redis prefix {settings.redis_prefix!r} is in use by a live cluster: {listed}; "
        "stop it (`backchannel --run-dir <its run dir> down`) or choose another prefix "
        "(redis_prefix in --config, or BACKCHANNEL_REDIS_PREFIX)")


def describe_db_error(settings: Settings, code: int | None, message: str) -> str | None:
    """One line saying what to grant (or fix) for a MariaDB error; None if not ours to
    explain."""
    where = f"{settings.mysql_host}:{settings.mysql_port}"
    if code in DB_UNREACHABLE:
        return f"cannot reach MariaDB at {where} (error {code}: {message})"
    if code == 1045:
        return (f"MariaDB at {where} refused the login of user {settings.mysql_user!r} "
                "(error 1045): check mysql_user and mysql_password")
    if code not in DB_DENIED:
        return None
    account = _account(message) or f"'{settings.mysql_user}'@'%'"
    database = _database(message) or settings.db_name("directory")
    return (f"SQL user {account} may not use database {database!r} (MariaDB error {code}); "
            f"as a MariaDB admin run: GRANT ALL PRIVILEGES ON `{settings.db_prefix}%`.* TO "
            f"{account}; or pick a db_prefix it may use (BACKCHANNEL_DB_PREFIX)")


def _account(message: str) -> str | None:
    found = re.search(r"'([^']*)'@'([^']*)'", message)
    return f"'{found.group(1)}'@'{found.group(2)}'" if found else None


def _database(message: str) -> str | None:
    found = (re.search(r"to database '([^']+)'", message)
             or re.search(r"for table `([^`]+)`\.`", message))
    return found.group(1) if found else None
