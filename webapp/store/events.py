"""SQL of the event log's readers: positions, catch-up pages, retention."""

from __future__ import annotations

import json

import aiomysql

from webapp.db import Database


async def events_after(db: Database, stream: str, after_seq: int, limit: int) -> list[dict]:
    async with db.chat(stream) as cur:
        await cur.execute(
            "SELECT seq, payload FROM events WHERE stream_id=%s AND seq>%s "
            "ORDER BY seq LIMIT %s", (stream, after_seq, limit),
        )
        return [{"seq": r["seq"], "event": json.loads(r["payload"])}
                for r in await cur.fetchall()]


async def stream_heads(db: Database, streams: list[str]) -> dict[str, int]:
    """The last committed seq of each stream (0 for a stream with no events yet): one query
    per shard touched, so a channel server learns the positions of many streams at once."""
    by_shard: dict[str, list[str]] = {}
    for stream in streams:
        by_shard.setdefault(db.shard_of(stream), []).append(stream)
    heads = dict.fromkeys(streams, 0)
    for group in by_shard.values():
        async with db.chat(group[0]) as cur:
            marks = ",".join(["%s"] * len(group))
            await cur.execute(
                f"SELECT stream_id, seq FROM stream_seq WHERE stream_id IN ({marks})", group)
            for row in await cur.fetchall():
                heads[row["stream_id"]] = int(row["seq"])
    return heads


async def oldest_events(db: Database, streams: list[str]) -> dict[str, int]:
    """The oldest seq still in the event log of each stream that has any (the retention
    purge removes older ones): a resume from before it cannot be served."""
    by_shard: dict[str, list[str]] = {}
    for stream in streams:
        by_shard.setdefault(db.shard_of(stream), []).append(stream)
    oldest: dict[str, int] = {}
    for group in by_shard.values():
        async with db.chat(group[0]) as cur:
            marks = ",".join(["%s"] * len(group))
            await cur.execute(
                f"SELECT stream_id, MIN(seq) AS seq FROM events WHERE stream_id IN ({marks}) "
                "GROUP BY stream_id", group)
            for row in await cur.fetchall():
                oldest[row["stream_id"]] = int(row["seq"])
    return oldest


async def purge_events(db: Database, before_us: int, batch: int = 5000) -> int:
    """Delete event-log rows older than ``before_us`` on every shard, in small batches so no
    transaction holds many locks; returns how many went. Messages stay (history reads
    them); only resume and gap repair read the log."""
    total = 0
    for shard in db.shards():
        while True:
            async def purge(cur: aiomysql.DictCursor) -> int:
                await cur.execute("DELETE FROM events WHERE ts_us < %s LIMIT %s",
                                  (before_us, batch))
                return int(cur.rowcount)

            gone = await db.transact_shard(shard, purge)
            total += gone
            if gone < batch:
                break
    return total
