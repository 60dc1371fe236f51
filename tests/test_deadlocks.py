"""Concurrent writes against real MariaDB: the retrying transaction helper (real deadlocks and
lock-wait timeouts, bounded attempts), and concurrent creates and joins through the Web API,
which must always answer ok or name_taken and never leave half-written state."""

from __future__ import annotations

import asyncio
import collections
import functools
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pymysql
import pytest
import trio

from cluster import ids
from tests.conftest import Cluster, rtm_session
from webapp import store
from webapp.db import Database, RetryPolicy
from webapp.slack.shapes import channel_shape

ROUNDS = 3
JOINS = 12
CREATES = 10
FAST = RetryPolicy(attempts=4, base_s=0.001, cap_s=0.005)


# --- helpers -------------------------------------------------------------------------------


def with_db(cluster: Cluster, fn: Callable[[Database], Awaitable[Any]], **kwargs: Any) -> Any:
    """Run ``fn(db)`` on a fresh asyncio loop: the store is asyncio-only (aiomysql)."""
    async def run() -> Any:
        db = Database(cluster.settings, **kwargs)
        await db.open()
        try:
            return await fn(db)
        finally:
            await db.close()

    return asyncio.run(run())


def raw_conn(cluster: Cluster, db_name: str) -> pymysql.connections.Connection:
    s = cluster.settings
    return pymysql.connect(host=s.mysql_host, port=s.mysql_port, user=s.mysql_user,
                           password=s.mysql_password, database=db_name, autocommit=False)


def shard_db(cluster: Cluster, db: Database, key: str) -> str:
    return cluster.settings.db_name("chat", db.shard_of(key))


def webapp_retries(cluster: Cluster) -> collections.Counter[str]:
    """Retries the webapp logged so far, by error code: what the concurrency cost."""
    counts: collections.Counter[str] = collections.Counter()
    for path in (cluster.run_dir / "logs").glob("webapp-*.log"):
        for code in re.findall(r"db retry pool=\S+ code=(\d+)", path.read_text(errors="replace")):
            counts[code] += 1
    return counts


async def call(http: httpx.AsyncClient, cluster: Cluster, method: str, token: str,
               **kwargs: Any) -> tuple[int, dict[str, Any]]:
    resp = await http.post(cluster.api + method, json=kwargs,
                           headers={"Authorization": f"Bearer {token}"})
    return resp.status_code, resp.json()


async def gather(*jobs: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Start every job at once (trio), results in order."""
    results: list[Any] = [None] * len(jobs)

    async def one(i: int) -> None:
        results[i] = await jobs[i]()

    async with trio.open_nursery() as nursery:
        for i in range(len(jobs)):
            nursery.start_soon(one, i)
    return results


async def redeem_channels(http: httpx.AsyncClient, cluster: Cluster, token: str) -> set[str]:
    """The user's channels exactly as a gateway learns them (the user_channels lookup)."""
    status, reply = await call(http, cluster, "rtm.connect", token)
    assert status == 200 and reply["ok"], reply
    ticket = reply["url"].split("ticket=", 1)[1]
    resp = await http.post(cluster.root + "/internal/rtm.redeem", json={"ticket": ticket},
                           headers=cluster.internal_headers())
    assert resp.status_code == 200, resp.text
    return set(resp.json()["channels"])


def name_owner(cluster: Cluster, team_id: str, name: str) -> str | None:
    conn = raw_conn(cluster, cluster.settings.db_name("directory"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT channel_id FROM channel_names WHERE team_id=%s AND name=%s",
                        (team_id, name))
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


# --- the retry helper against real MariaDB -------------------------------------------------


def test_backoff_is_bounded_full_jitter() -> None:
    policy = RetryPolicy(attempts=5, base_s=0.01, cap_s=0.2)
    for attempt in range(1, 12):
        ceiling = min(0.2, 0.01 * 2 ** (attempt - 1))
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the window, not a fixed pause


def test_transact_retries_a_real_deadlock(cluster: Cluster) -> None:
    """Two transactions lock two rows in opposite order: InnoDB kills one (1213), the
    helper runs that one again from the start, and both end up committed exactly once."""
    a, b = ids.new_id("Z"), ids.new_id("Z")
    calls: collections.Counter[str] = collections.Counter()

    async def scenario(db: Database) -> tuple[list[str], dict[int, int], dict[str, int]]:
        for row in (a, b):
            await db.transact(a, lambda cur, row=row: cur.execute(
                "INSERT INTO stream_seq VALUES (%s, 0, 0)", (row,)))
        both_hold_one = asyncio.Barrier(2)

        def body(name: str, first: str, second: str) -> Callable[[Any], Awaitable[str]]:
            async def run(cur: Any) -> str:
                calls[name] += 1
                await cur.execute("UPDATE stream_seq SET seq=seq+1 WHERE stream_id=%s", (first,))
                if calls[name] == 1:
                    await both_hold_one.wait()
                await cur.execute("UPDATE stream_seq SET seq=seq+1 WHERE stream_id=%s",
                                  (second,))
                return name
            return run

        done = await asyncio.gather(db.transact(a, body("x", a, b)),
                                    db.transact(a, body("y", b, a)))
        async with db.chat(a) as cur:
            await cur.execute("SELECT stream_id, seq FROM stream_seq WHERE stream_id IN "
                              "(%s, %s)", (a, b))
            seqs = {r["stream_id"]: r["seq"] for r in await cur.fetchall()}
        return done, dict(db.retries), seqs

    done, retries, seqs = with_db(cluster, scenario, retry=FAST)
    assert done == ["x", "y"]
    assert retries.get(1213, 0) >= 1 and sum(calls.values()) == 2 + retries[1213]
    assert seqs == {a: 2, b: 2}  # each committed once; the killed attempt left nothing


def test_transact_retries_a_lock_wait_timeout(cluster: Cluster) -> None:
    """A lock held past innodb_lock_wait_timeout (1205) is waited out by running again."""
    row = ids.new_id("Z")
    calls = collections.Counter[str]()

    async def scenario(db: Database) -> dict[int, int]:
        await db.transact(row, lambda cur: cur.execute(
            "INSERT INTO stream_seq VALUES (%s, 0, 0)", (row,)))
        holder = raw_conn(cluster, shard_db(cluster, db, row))
        holder.cursor().execute("SELECT 1 FROM stream_seq WHERE stream_id=%s FOR UPDATE", (row,))
        # the holder lets go while the first attempt is already timing out
        release = threading.Timer(1.5, holder.commit)
        release.start()

        async def bump(cur: Any) -> None:
            calls["bump"] += 1
            await cur.execute("UPDATE stream_seq SET seq=seq+1 WHERE stream_id=%s", (row,))

        try:
            await db.transact(row, bump)
        finally:
            release.join()
            holder.close()
        return dict(db.retries)

    retries = with_db(cluster, scenario, retry=RetryPolicy(attempts=5, base_s=0.01),
                      lock_wait_timeout_s=1)
    assert retries.get(1205, 0) >= 1 and calls["bump"] == 1 + retries[1205]


def test_transact_does_not_retry_other_errors_and_rolls_back(cluster: Cluster) -> None:
    row = ids.new_id("Z")
    calls = collections.Counter[str]()

    async def scenario(db: Database) -> int:
        await db.transact(row, lambda cur: cur.execute(
            "INSERT INTO stream_seq VALUES (%s, 0, 0)", (row,)))

        async def bump_then_duplicate(cur: Any) -> None:
            calls["run"] += 1
            await cur.execute("UPDATE stream_seq SET seq=seq+1 WHERE stream_id=%s", (row,))
            await cur.execute("INSERT INTO stream_seq VALUES (%s, 0, 0)", (row,))

        with pytest.raises(pymysql.err.IntegrityError):
            await db.transact(row, bump_then_duplicate)
        with pytest.raises(store.PostRefused):
            await db.transact_directory(lambda cur: _refuse(calls))
        async with db.chat(row) as cur:
            await cur.execute("SELECT seq FROM stream_seq WHERE stream_id=%s", (row,))
            return (await cur.fetchone())["seq"]

    assert with_db(cluster, scenario, retry=FAST) == 0
    assert calls == {"run": 1, "refused": 1}


async def _refuse(calls: collections.Counter[str]) -> None:
    calls["refused"] += 1
    raise store.PostRefused("not_in_channel")


def test_transact_gives_up_after_bounded_attempts(cluster: Cluster) -> None:
    calls = collections.Counter[str]()

    async def always_deadlocks(cur: Any) -> None:
        calls["run"] += 1
        await cur.execute("SELECT 1")
        raise pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")

    async def scenario(db: Database) -> dict[int, int]:
        with pytest.raises(pymysql.err.OperationalError) as info:
            await db.transact_directory(always_deadlocks)
        assert info.value.args[0] == 1213
        return dict(db.retries)

    started = time.monotonic()
    assert with_db(cluster, scenario, retry=FAST) == {1213: FAST.attempts - 1}
    assert calls["run"] == FAST.attempts
    assert time.monotonic() - started < 5


# --- half-written state is repaired or undone ----------------------------------------------


def test_join_repairs_a_missing_lookup_row(cluster: Cluster) -> None:
    """A join whose second transaction (user's shard) once failed: calling join again writes
    the lookup row and announces channel_joined, so the user's gateway subscribes."""
    ws = cluster.seed(2)
    user = ws["users"][1]["id"]

    async def scenario(db: Database) -> tuple[list[str], list[str], list[str]]:
        channel = await store.get_channel(db, ws["channels"][0]["id"])
        assert channel is not None
        await db.transact(user, lambda cur: cur.execute(
            "DELETE FROM user_channels WHERE user_id=%s", (user,)))
        repaired = await store.join_channel(db, channel, user, channel_shape)
        again = await store.join_channel(db, channel, user, channel_shape)
        return ([p.event["type"] for p in repaired], [p.event["type"] for p in again],
                await store.user_channels(db, user))

    repaired, again, lookup = with_db(cluster, scenario)
    assert repaired == ["channel_joined"] and again == []
    assert lookup == [ws["channels"][0]["id"]]


def test_join_that_only_repairs_the_lookup_row_still_warns_already_in_channel(
        cluster: Cluster) -> None:
    ws = cluster.seed(2)
    user = ws["users"][1]
    with_db(cluster, lambda db: db.transact(user["id"], lambda cur: cur.execute(
        "DELETE FROM user_channels WHERE user_id=%s", (user["id"],))))
    reply = httpx.post(cluster.api + "conversations.join",
                       json={"channel": ws["channels"][0]["id"]},
                       headers={"Authorization": f"Bearer {user['token']}"}, timeout=10).json()
    assert reply["ok"] and reply["warning"] == "already_in_channel", reply
    lookup = with_db(cluster, lambda db: store.user_channels(db, user["id"]))
    assert lookup == [ws["channels"][0]["id"]]


def test_failed_create_releases_its_name(cluster: Cluster) -> None:
    """The creator's lookup row cannot be written (its stream is locked past every retry):
    the create fails, and leaves neither the name nor the channel behind."""
    ws = cluster.seed(1)
    team, creator = ws["team"]["id"], ws["users"][0]["id"]
    name = ids.new_id("n").lower()

    async def scenario(db: Database) -> None:
        holder = raw_conn(cluster, shard_db(cluster, db, creator))
        try:
            holder.cursor().execute(
                "SELECT 1 FROM stream_seq WHERE stream_id=%s FOR UPDATE", (creator,))
            with pytest.raises(pymysql.err.OperationalError) as info:
                await store.create_channel(db, team, creator, name, False, channel_shape)
            assert info.value.args[0] == 1205
        finally:
            holder.rollback()
            holder.close()
        assert name_owner(cluster, team, name) is None
        assert not [c for c in await store.user_channels(db, creator)
                    if (await store.get_channel(db, c)) is None]
        row, _ = await store.create_channel(db, team, creator, name, False, channel_shape)
        assert await store.is_member(db, row["id"], creator)

    with_db(cluster, scenario, retry=RetryPolicy(attempts=2, base_s=0.01),
            lock_wait_timeout_s=1)
    assert name_owner(cluster, team, name) is not None


# --- concurrent creates and joins through the Web API --------------------------------------


async def test_concurrent_joins_by_one_user_all_succeed(cluster: Cluster) -> None:
    ws = cluster.seed(2)
    owner, joiner = ws["users"]
    before = webapp_retries(cluster)
    async with httpx.AsyncClient(timeout=30) as http, rtm_session(
        cluster, joiner["token"]
    ) as rtm:
        for r in range(ROUNDS):
            channels = []
            for i in range(JOINS):
                status, reply = await call(http, cluster, "conversations.create", owner["token"],
                                           name=f"join-{r}-{i}")
                assert status == 200 and reply["ok"], reply
                channels.append(reply["channel"]["id"])
            replies = await gather(*(
                functools.partial(call, http, cluster, "conversations.join", joiner["token"],
                                  channel=c)
                for c in channels))
            assert all(s == 200 and b["ok"] and "warning" not in b for s, b in replies), replies
            await _assert_member_everywhere(http, cluster, joiner["token"], channels)
            await _assert_live_delivery(http, cluster, rtm, owner["token"], channels)
    print("webapp retries during concurrent joins:", webapp_retries(cluster) - before)


async def _assert_member_everywhere(http: httpx.AsyncClient, cluster: Cluster, token: str,
                                    channels: list[str]) -> None:
    for channel in channels:
        status, info = await call(http, cluster, "conversations.info", token, channel=channel)
        assert status == 200 and info["channel"]["is_member"] is True, info
    assert set(channels) <= await redeem_channels(http, cluster, token)


async def _assert_live_delivery(http: httpx.AsyncClient, cluster: Cluster, rtm: Any,
                                poster: str, channels: list[str]) -> None:
    """The joiner's open socket learnt every join and gets the next message in each."""
    pending = set(channels)
    while pending:
        event = await rtm.next({"type": "channel_joined"})
        pending.discard(event["channel"]["id"])
    for channel in channels:
        status, reply = await call(http, cluster, "chat.postMessage", poster, channel=channel,
                                   text=f"hello {channel}")
        assert status == 200 and reply["ok"], reply
        await rtm.next({"type": "message", "channel": channel, "ts": reply["ts"]})


async def test_concurrent_creates_with_distinct_names_all_succeed(cluster: Cluster) -> None:
    ws = cluster.seed(1)
    token = ws["users"][0]["token"]
    async with httpx.AsyncClient(timeout=30) as http:
        for r in range(ROUNDS):
            replies = await gather(*(
                functools.partial(call, http, cluster, "conversations.create", token,
                                  name=f"distinct-{r}-{i}")
                for i in range(CREATES)))
            assert all(s == 200 and b["ok"] for s, b in replies), replies
            channels = [b["channel"]["id"] for _, b in replies]
            await _assert_member_everywhere(http, cluster, token, channels)
            for i, channel in enumerate(channels):
                assert name_owner(cluster, ws["team"]["id"], f"distinct-{r}-{i}") == channel


async def test_concurrent_creates_of_one_name_one_wins(cluster: Cluster) -> None:
    ws = cluster.seed(CREATES)
    users = ws["users"]
    async with httpx.AsyncClient(timeout=30) as http:
        for r in range(ROUNDS):
            name = f"contested-{r}"
            replies = await gather(*(
                functools.partial(call, http, cluster, "conversations.create", u["token"],
                                  name=name)
                for u in users))
            assert all(s == 200 for s, _ in replies), replies
            winners = [(u, b) for u, (_, b) in zip(users, replies, strict=True) if b["ok"]]
            assert len(winners) == 1, replies
            assert sorted(b["error"] for _, b in replies if not b["ok"]) == (
                ["name_taken"] * (CREATES - 1))
            creator, won = winners[0]
            channel = won["channel"]["id"]
            assert name_owner(cluster, ws["team"]["id"], name) == channel
            await _assert_member_everywhere(http, cluster, creator["token"], [channel])
