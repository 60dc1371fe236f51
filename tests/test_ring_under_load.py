"""`ring add`, `ring drain` and `ring remove` (of a member killed with -9) while members
stay connected and posts flow: per member and channel nothing is lost, nothing duplicated,
nothing out of ts order, and every post answers ok. The streams each operation moved are
compared with its dry-run prediction."""

from __future__ import annotations

import os
import signal
from typing import Any

import trio

from ops import cluster as ops_cluster
from ops import loadcheck, ringops
from tests.conftest import private_cluster
from tests.test_failover import assert_clean, room_per_member


async def test_add_drain_and_remove_under_load(tmp_path):
    with private_cluster(tmp_path, channels=2, gateways=2) as c:
        ws = c.seed(5)
        rooms = await trio.to_thread.run_sync(room_per_member, c, ws, 6)
        members = [u["token"] for u in ws["users"][1:]]
        poster = ws["users"][0]["token"]
        opts = ringops.Options(timeout=60)
        results: dict[str, dict[str, Any]] = {}

        async def op(name: str, fn: Any, *args: Any) -> None:
            results[name] = await trio.to_thread.run_sync(fn, c.run_dir, *args, opts)

        async def load(fault: Any, prefix: str) -> None:
            report = await loadcheck.run(c.api, poster, members, rooms, rate=20, seconds=4,
                                         fault=fault, fault_after=0.5, prefix=prefix)
            print(prefix, assert_clean(report))

        await load(lambda: op("add", ringops.add, None), "add")
        added = results["add"]
        assert added["member"] == "channel-3"
        assert added["epoch_after"] == added["epoch_before"] + 2
        # everything the prediction said would move arrived at the new member
        assert added["moved"]["streams"] == added["predicted"]["streams"] > 0

        await load(lambda: op("drain", ringops.drain, "channel-1"), "drain")
        drained = results["drain"]
        assert drained["subscriptions_at_removal"] == 0
        ring = await trio.to_thread.run_sync(ops_cluster.read_ring, c.settings)
        assert set(ring.members) == {"channel-2", "channel-3"}

        victim = next(p for p in c.processes("channel_server") if p["name"] == "channel-2")

        async def kill_and_remove() -> None:
            os.kill(victim["pid"], signal.SIGKILL)
            await op("remove", ringops.remove, "channel-2")

        await load(kill_and_remove, "remove")
        ring = await trio.to_thread.run_sync(ops_cluster.read_ring, c.settings)
        assert set(ring.members) == {"channel-3"}
