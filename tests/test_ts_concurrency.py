"""ts and seq under concurrent writers to one channel, straight against MariaDB: whatever the
number of writers and posts, every ts is unique, and ts order equals seq order."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster import ids
from webapp import store
from webapp.db import Database
from webapp.slack.shapes import channel_shape


async def _channel(db: Database) -> tuple[store.Identity, str]:
    team = await store.create_team(db, "ts", "ts")
    user, _ = await store.create_user(db, team["id"], "writer")
    row, _ = await store.create_channel(db, team["id"], user["id"], ids.new_id("c").lower(),
                                        False, channel_shape)
    return store.Identity(user["id"], team["id"], "writer", "ts", "ts", False, None), row["id"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writers=st.integers(2, 12), posts=st.integers(1, 6))
def test_concurrent_posts_get_unique_increasing_ts(cluster, writers, posts):
    async def run() -> list[tuple[int, str]]:
        db = Database(cluster.settings)
        await db.open()
        try:
            who, channel = await _channel(db)

            async def writer(w: int) -> list[tuple[int, str]]:
                out = []
                for i in range(posts):
                    posted, msg = await store.post_message(db, channel, who, f"{w}.{i}",
                                                           None, None)
                    out.append((posted.seq, msg["ts"]))
                return out

            results = await asyncio.gather(*(writer(w) for w in range(writers)))
            return [pair for chunk in results for pair in chunk]
        finally:
            await db.close()

    pairs = asyncio.run(run())
    total = writers * posts
    assert len({ts for _, ts in pairs}) == total
    by_seq = [ids.parse_ts(ts) for _, ts in sorted(pairs)]
    assert by_seq == sorted(by_seq) and len(set(by_seq)) == total
    # seqs start after the creator's member_joined_channel event and have no gaps
    assert sorted(seq for seq, _ in pairs) == list(range(2, total + 2))
