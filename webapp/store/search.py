"""SQL of search.messages: InnoDB FULLTEXT on each chat shard, scatter-gather.

Every query names the channels it may read (``channel_id IN (...)``): the caller decides
which, and no query ever runs without that filter. A search is two rounds per shard: the
positions (channel, ts, score) of the first ``limit`` matches with the total count, then the
rows of the one page kept after merging the shards.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiomysql

from webapp.db import Database

# the message kinds a search finds: people's messages, not system notices nor tombstones
SEARCHABLE_SUBTYPES = ("me_message", "thread_broadcast", "bot_message", "file_share")


@dataclasses.dataclass(frozen=True)
class FulltextRules:
    """Which words the server's FULLTEXT index holds: shorter or longer ones, and
    stopwords, are not indexed, and a required term that is not indexed matches nothing."""

    min_len: int
    max_len: int
    stopwords: frozenset[str] | None  # None: unknown, so no word may be trusted to the index


@dataclasses.dataclass(frozen=True)
class Filter:
    """What a match must satisfy, besides being in one of the channels searched.

    ``against``: a FULLTEXT boolean-mode expression (every term required), or None;
    ``regexes`` must all match the text and ``excluded`` none (both case-insensitive, by
    the column's collation); ``users``: authors (None: anyone); [after_us, before_us)."""

    against: str | None = None
    regexes: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    users: tuple[str, ...] | None = None
    after_us: int | None = None
    before_us: int | None = None


async def fulltext_rules(db: Database) -> FulltextRules:
    """The server's FULLTEXT configuration (read from any shard: one server's settings)."""
    shard = db.shards()[0]

    async def read(cur: aiomysql.DictCursor) -> FulltextRules:
        await cur.execute(
            "SELECT @@innodb_ft_min_token_size AS lo, @@innodb_ft_max_token_size AS hi, "
            "@@innodb_ft_enable_stopword AS stop, @@innodb_ft_server_stopword_table AS tbl")
        cfg = await cur.fetchone()
        words: frozenset[str] | None = frozenset()
        if cfg["stop"] and cfg["tbl"]:
            words = None  # a custom list we may not be allowed to read
        elif cfg["stop"]:
            await cur.execute("SELECT value FROM INFORMATION_SCHEMA.INNODB_FT_DEFAULT_STOPWORD")
            words = frozenset(str(r["value"]).lower() for r in await cur.fetchall())
        return FulltextRules(int(cfg["lo"]), int(cfg["hi"]), words)

    return await db.transact_shard(shard, read)


def _where(channel_ids: list[str], flt: Filter) -> tuple[str, list[Any]]:
    marks = ",".join(["%s"] * len(channel_ids))
    kinds = ",".join(["%s"] * len(SEARCHABLE_SUBTYPES))
    clauses = [f"channel_id IN ({marks})", f"(subtype IS NULL OR subtype IN ({kinds}))"]
    params: list[Any] = [*channel_ids, *SEARCHABLE_SUBTYPES]
    if flt.against is not None:
        clauses.append("MATCH(text) AGAINST (%s IN BOOLEAN MODE)")
        params.append(flt.against)
    for regex in flt.regexes:
        clauses.append("text REGEXP %s")
        params.append(regex)
    for regex in flt.excluded:
        clauses.append("text NOT REGEXP %s")
        params.append(regex)
    if flt.users is not None:
        clauses.append(f"user_id IN ({','.join(['%s'] * len(flt.users))})")
        params += list(flt.users)
    if flt.after_us is not None:
        clauses.append("ts_us >= %s")
        params.append(flt.after_us)
    if flt.before_us is not None:
        clauses.append("ts_us < %s")
        params.append(flt.before_us)
    return " AND ".join(clauses), params


async def _positions(db: Database, channel_ids: list[str], flt: Filter, by_score: bool,
                     ascending: bool, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """One shard: (how many match, the first ``limit`` positions in order)."""
    where, params = _where(channel_ids, flt)
    direction = "ASC" if ascending else "DESC"
    score = "MATCH(text) AGAINST (%s IN BOOLEAN MODE)" if flt.against is not None else "0"
    head = [flt.against] if flt.against is not None else []
    order = f"score {direction}, ts_us {direction}" if by_score else f"ts_us {direction}"
    async with db.chat(channel_ids[0]) as cur:
        await cur.execute(
            f"SELECT channel_id, ts_us, {score} AS score, COUNT(*) OVER () AS total "
            f"FROM messages WHERE {where} ORDER BY {order}, channel_id {direction} LIMIT %s",
            [*head, *params, limit])
        rows = list(await cur.fetchall())
    return (int(rows[0]["total"]) if rows else 0), rows


async def find(db: Database, channel_ids: list[str], flt: Filter, *, by_score: bool,
               ascending: bool, offset: int, count: int) -> tuple[int, list[dict[str, Any]]]:
    """(total matches, the rows of matches ``offset`` to ``offset + count`` in order, each
    with its ``score``): one query per shard holding any of ``channel_ids``, merged."""
    if not channel_ids:
        return 0, []
    groups: dict[str, list[str]] = {}
    for channel in channel_ids:
        groups.setdefault(db.shard_of(channel), []).append(channel)
    parts = await asyncio.gather(*(_positions(db, group, flt, by_score, ascending,
                                              offset + count) for group in groups.values()))
    total = sum(n for n, _ in parts)

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (float(r["score"]), r["ts_us"], r["channel_id"]) if by_score \
            else (r["ts_us"], r["channel_id"])

    merged = sorted((r for _, rows in parts for r in rows), key=key, reverse=not ascending)
    page = merged[offset:offset + count]
    rows = await _rows(db, page)
    shown = []
    for pos in page:
        row = rows.get((pos["channel_id"], pos["ts_us"]))
        if row is not None:  # deleted between the two rounds
            shown.append(row | {"score": float(pos["score"])})
    return total, shown


async def _rows(db: Database, positions: list[dict[str, Any]]
                ) -> dict[tuple[str, int], dict[str, Any]]:
    """The messages at ``positions``: one query per shard touched."""
    by_channel: dict[str, list[int]] = {}
    for pos in positions:
        by_channel.setdefault(pos["channel_id"], []).append(pos["ts_us"])
    groups: dict[str, list[str]] = {}
    for channel in by_channel:
        groups.setdefault(db.shard_of(channel), []).append(channel)

    async def one(channels: list[str]) -> list[dict[str, Any]]:
        clauses, params = [], []
        for channel in channels:
            stamps = by_channel[channel]
            clauses.append(f"(channel_id=%s AND ts_us IN ({','.join(['%s'] * len(stamps))}))")
            params += [channel, *stamps]
        async with db.chat(channels[0]) as cur:
            await cur.execute(f"SELECT * FROM messages WHERE {' OR '.join(clauses)}", params)
            return list(await cur.fetchall())

    parts = await asyncio.gather(*(one(group) for group in groups.values()))
    return {(r["channel_id"], r["ts_us"]): r for part in parts for r in part}


async def team_public_channels(db: Database, team_id: str) -> list[dict[str, Any]]:
    """Every public channel of the workspace (archived too: search finds their messages):
    a scatter read on the by_team index."""

    async def one(cur: aiomysql.DictCursor) -> list[dict[str, Any]]:
        await cur.execute(
            "SELECT * FROM channels WHERE team_id=%s AND is_private=0 AND is_im=0 "
            "AND is_mpim=0", (team_id,))
        return list(await cur.fetchall())

    parts = await asyncio.gather(*(db.transact_shard(s, one) for s in db.shards()))
    return [r for part in parts for r in part]


async def user_ids_by_name(db: Database, team_id: str, names: list[str]) -> dict[str, str]:
    """name -> id of the workspace's users among ``names`` (``from:@name``)."""
    if not names:
        return {}
    async with db.directory() as cur:
        marks = ",".join(["%s"] * len(names))
        await cur.execute(f"SELECT id, name FROM users WHERE team_id=%s AND name IN ({marks})",
                          [team_id, *names])
        return {r["name"]: r["id"] for r in await cur.fetchall()}
