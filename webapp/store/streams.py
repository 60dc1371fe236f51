"""The event log's writer: every change that produces a real-time event appends it here,
inside the change's own transaction, so an event exists (with its seq and ts) exactly when
the change it describes is committed.

Lock order: a transaction that writes a stream's rows (channel or personal stream) X-locks
that stream's ``stream_seq`` row first. Every row it then writes is keyed by that stream, so
writers of one stream queue on one lock instead of meeting halfway in opposite order.

Appended events are also registered with the running transaction (:mod:`webapp.db`); the
database hands them to the outbox once, and only if, the transaction commits.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import aiomysql
import orjson

from cluster import ids
from webapp import db as _db
from webapp.db import TxCursor


@dataclasses.dataclass(frozen=True)
class Posted:
    """An event committed to a stream, waiting to be handed to an admin server."""

    stream: str
    seq: int
    event: dict[str, Any]


async def lock_stream(cur: TxCursor, stream: str) -> tuple[int, int]:
    """X-lock the stream's allocator row, creating it if missing; returns (seq, last_ts_us).

    ON DUPLICATE KEY UPDATE takes the exclusive lock at once. The former INSERT IGNORE took a
    shared lock on the existing row, and two transactions holding it both deadlocked when
    SELECT ... FOR UPDATE tried to upgrade it. Both statements go in one round trip.
    """
    cur.defer(
        "INSERT INTO stream_seq VALUES (%s, 0, 0) ON DUPLICATE KEY UPDATE seq=seq", (stream,)
    )
    await cur.execute(
        "SELECT seq, last_ts_us FROM stream_seq WHERE stream_id=%s FOR UPDATE", (stream,)
    )
    row = await cur.fetchone()
    return row["seq"], row["last_ts_us"]


def payload(event: dict[str, Any]) -> str:
    """An event as the log stores it: orjson (hot: once per event), or json for what
    orjson refuses (integers past 64 bits, lone surrogates), ASCII-escaped as before."""
    try:
        return orjson.dumps(event).decode()
    except TypeError:
        return json.dumps(event, separators=(",", ":"))


async def append_event(
    cur: TxCursor, stream: str, build: Callable[[str], dict[str, Any]]
) -> tuple[Posted, int]:
    """Assign the stream's next seq and ts, store the event; returns it with its ts in µs.

    Must run inside a transaction on the stream's shard: the row lock on stream_seq is what
    makes seq gap-free and ts strictly increasing under concurrent writers.
    """
    seq, last_ts_us = await lock_stream(cur, stream)
    return await append_locked(cur, stream, seq, last_ts_us, build)


async def append_locked(
    cur: TxCursor, stream: str, seq: int, last_ts_us: int,
    build: Callable[[str], dict[str, Any]],
) -> tuple[Posted, int]:
    """Both writes are deferred (TxCursor.defer): they reach the server with the
    transaction's next statement or its COMMIT, as part of that round trip."""
    ts_us = ids.next_ts_us(ids.now_us(), last_ts_us)
    event = build(ids.format_ts(ts_us))
    cur.defer(
        "UPDATE stream_seq SET seq=%s, last_ts_us=%s WHERE stream_id=%s",
        (seq + 1, ts_us, stream),
    )
    cur.defer(
        "INSERT INTO events (stream_id, seq, ts_us, payload) VALUES (%s, %s, %s, %s)",
        (stream, seq + 1, ts_us, payload(event)),
    )
    posted = Posted(stream, seq + 1, event)
    _db.on_commit(posted)
    return posted, ts_us


async def lock_streams(cur: aiomysql.DictCursor, streams: list[str]) -> dict[str, tuple[int, int]]:
    """lock_stream for many streams of one shard at once, in id order (two batches that
    share streams lock them in the same order); stream -> (seq, last_ts_us)."""
    ordered = sorted(set(streams))
    if not ordered:
        return {}
    await cur.executemany(  # placeholders only: the driver sends one multi-row INSERT
        "INSERT INTO stream_seq VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE seq=seq",
        [(s, 0, 0) for s in ordered])
    marks = ",".join(["%s"] * len(ordered))
    await cur.execute(
        f"SELECT stream_id, seq, last_ts_us FROM stream_seq WHERE stream_id IN ({marks}) "
        "ORDER BY stream_id FOR UPDATE", ordered)
    return {r["stream_id"]: (r["seq"], r["last_ts_us"]) for r in await cur.fetchall()}


async def append_many_locked(
    cur: aiomysql.DictCursor, heads: dict[str, tuple[int, int]],
    items: list[tuple[str, Callable[[str], dict[str, Any]]]],
) -> list[Posted]:
    """append_locked for many events at once, in a few statements (bulk inserts of seeding
    thousands of users): ``heads`` are the locked streams' (seq, last_ts_us), ``items``
    (stream, build) pairs appended in order, several to one stream allowed."""
    now = ids.now_us()
    position = dict(heads)
    rows, posted = [], []
    for stream, build in items:
        seq, last_ts_us = position[stream]
        ts_us = ids.next_ts_us(now, last_ts_us)
        event = build(ids.format_ts(ts_us))
        position[stream] = (seq + 1, ts_us)
        rows.append((stream, seq + 1, ts_us, payload(event)))
        posted.append(Posted(stream, seq + 1, event))
    if not rows:
        return []
    await cur.executemany(
        "INSERT INTO events (stream_id, seq, ts_us, payload) VALUES (%s, %s, %s, %s)", rows)
    await cur.executemany(
        "INSERT INTO stream_seq (stream_id, seq, last_ts_us) VALUES (%s, %s, %s) "
        "ON DUPLICATE KEY UPDATE seq=VALUES(seq), last_ts_us=VALUES(last_ts_us)",
        [(s, seq, ts) for s, (seq, ts) in position.items() if (seq, ts) != heads[s]])
    for item in posted:
        _db.on_commit(item)
    return posted
