"""`backchannel ring show|add|drain|remove` end to end: one private cluster of real
processes, a real RTM client holding subscriptions, and the CLI run as a subprocess so that
exit codes and JSON are the ones a user gets."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from cluster import registry
from cluster.ring import Member
from ops import cluster as ops_cluster
from ops.leases import live_leases
from tests.conftest import Cluster, RtmSession, api_call, private_cluster, rtm_session

CHANNELS = 30  # enough that adding a third member moves some streams for sure (p ~ 1e-6)
# a user subscribes to the channels it created, #general and its personal stream
USER_STREAMS = CHANNELS + 2


@dataclasses.dataclass
class Cli:
    code: int
    doc: Any
    stdout: str
    stderr: str


async def cli(run_dir: Path, *args: str) -> Cli:
    """Run the CLI in a thread, so the RTM client keeps reading meanwhile."""
    cmd = [sys.executable, "-m", "ops.cli", "--run-dir", str(run_dir), *args]
    out = await trio.to_thread.run_sync(
        lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=180))
    doc = json.loads(out.stdout) if "--json" in args and out.stdout.strip() else None
    return Cli(out.returncode, doc, out.stdout, out.stderr)


async def ok(run_dir: Path, *args: str) -> Any:
    out = await cli(run_dir, *args, "--json")
    assert out.code == 0, (args, out.stderr, out.stdout)
    return out.doc


def processes(c: Cluster) -> dict[str, dict[str, Any]]:
    state = ops_cluster.load_state(c.run_dir)
    assert state is not None
    return {p["name"]: p for p in state["processes"]}


def totals(show: dict[str, Any]) -> int:
    return sum(m["subscriptions"] for m in show["members"])


async def collect(session: RtmSession, texts: set[str]) -> None:
    try:
        while True:
            event = json.loads(await session.ws.get_message())
            if event.get("type") == "message":
                texts.add(event.get("text", ""))
    except ConnectionClosed:
        pass


async def assert_delivered(c: Cluster, token: str, channels: list[str], texts: set[str],
                           tag: str) -> None:
    """After ring changes a post to every channel still reaches the client."""
    want = {f"{tag} {cid}" for cid in channels}
    for text in sorted(want):
        reply = api_call(c, "chat.postMessage", token, channel=text.split()[1], text=text)
        assert reply.json()["ok"], reply.text
    with trio.fail_after(15):
        while not want <= texts:
            await trio.sleep(0.05)


async def test_ring_show_add_drain_remove(tmp_path):
    with private_cluster(tmp_path, channels=2, gateways=1) as c:
        ws = c.seed(users=2)
        token = ws["users"][0]["token"]
        channels = []
        for i in range(CHANNELS):
            reply = api_call(c, "conversations.create", token, name=f"ring-{i}").json()
            assert reply["ok"], reply
            channels.append(reply["channel"]["id"])
        texts: set[str] = set()
        async with rtm_session(c, token) as session, trio.open_nursery() as nursery:
            nursery.start_soon(collect, session, texts)
            show = await check_show(c)
            added = await check_add(c, show)
            await check_drain(c, added, totals(show))
            await assert_delivered(c, token, channels, texts, "after-drain")
            await check_remove_dead(c)
            await check_forget_and_errors(c)
            nursery.cancel_scope.cancel()


async def check_show(c: Cluster) -> dict[str, Any]:
    show = await ok(c.run_dir, "ring", "show")
    assert set(show) >= {"epoch", "vnodes", "members", "standby"}
    assert show["vnodes"] == 150 and show["epoch"] >= 1 and show["standby"] == []
    assert [m["name"] for m in show["members"]] == ["channel-1", "channel-2"]
    for m in show["members"]:
        assert set(m) >= {"name", "process", "state", "address", "alive", "share", "streams",
                          "subscriptions"}
        assert m["process"] == m["name"] and m["state"] == "active" and m["alive"] is True
        assert m["address"].startswith("ws://") and 0.2 < m["share"] < 0.8
    assert abs(sum(m["share"] for m in show["members"]) - 1) < 1e-3
    assert totals(show) >= USER_STREAMS  # one gateway, one subscription per stream
    return show


async def check_add(c: Cluster, show: dict[str, Any]) -> dict[str, Any]:
    dry = await ok(c.run_dir, "ring", "add", "--dry-run")
    assert dry["op"] == "add" and dry["dry_run"] is True and dry["member"] == "channel-3"
    assert dry["epoch_before"] == dry["epoch_after"] == show["epoch"]
    assert dry["predicted"]["streams"] > 0 and dry["predicted"]["subscriptions"] > 0
    assert dry["moved"] == {"streams": 0, "subscriptions": 0}
    still = await ok(c.run_dir, "ring", "show")
    assert still["epoch"] == show["epoch"] and len(still["members"]) == 2
    assert "channel-3" not in processes(c)

    added = await ok(c.run_dir, "ring", "add", "--timeout", "60")
    assert added["member"] == added["process"] == "channel-3" and added["dry_run"] is False
    assert added["epoch_after"] == added["epoch_before"] + 2 == show["epoch"] + 2
    assert added["predicted"] == dry["predicted"]  # nothing changed in between
    assert added["moved"] == added["predicted"]
    assert added["seconds"] > 0
    after = await ok(c.run_dir, "ring", "show")
    assert after["epoch"] == added["epoch_after"]
    new = {m["name"]: m for m in after["members"]}["channel-3"]
    assert new["state"] == "active" and new["alive"] and new["share"] > 0.1
    assert new["streams"] == added["moved"]["streams"]
    assert totals(after) == totals(show)  # every subscription moved, none lost
    assert ops_cluster.alive(processes(c)["channel-3"]["pid"])
    return added


async def check_drain(c: Cluster, added: dict[str, Any], total: int) -> None:
    dry = await ok(c.run_dir, "ring", "drain", "channel-3", "--dry-run")
    assert dry["predicted"] == added["moved"] and dry["epoch_after"] == dry["epoch_before"]
    pid = processes(c)["channel-3"]["pid"]
    drained = await ok(c.run_dir, "ring", "drain", "channel-3", "--timeout", "60")
    assert drained["op"] == "drain" and drained["member"] == "channel-3"
    assert drained["moved"] == added["moved"]  # what it held before draining
    assert drained["subscriptions_at_removal"] == 0
    assert drained["epoch_after"] == drained["epoch_before"] + 2
    after = await ok(c.run_dir, "ring", "show")
    assert [m["name"] for m in after["members"]] == ["channel-1", "channel-2"]
    assert totals(after) == total
    assert not ops_cluster.alive(pid) and "channel-3" not in processes(c)


async def check_remove_dead(c: Cluster) -> None:
    victim = processes(c)["channel-2"]
    os.kill(victim["pid"], signal.SIGKILL)
    with trio.fail_after(10):  # until its lease runs out
        while "channel-2" in live_leases(c.settings)["channel_server"]:
            await trio.sleep(0.1)
    show = await ok(c.run_dir, "ring", "show")
    assert [m["alive"] for m in show["members"]] == [True, False]
    status = await cli(c.run_dir, "status", "--json")
    assert status.code == 1 and status.doc["healthy"] is False
    assert status.doc["ring"]["detail"]["channel-2"]["alive"] is False
    assert any("channel-2" in problem for problem in status.doc["problems"])

    removed = await ok(c.run_dir, "ring", "remove", "channel-2")
    assert removed["op"] == "remove" and removed["member"] == "channel-2"
    assert removed["epoch_after"] == removed["epoch_before"] + 1
    show = await ok(c.run_dir, "ring", "show")
    assert [m["name"] for m in show["members"]] == ["channel-1"]
    assert "channel-2" not in processes(c)
    status = await cli(c.run_dir, "status", "--json")
    assert status.code == 0 and status.doc["healthy"] is True, status.doc["problems"]


async def check_forget_and_errors(c: Cluster) -> None:
    # a dead process of the run dir that serves no slot is just forgotten
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    record = {"name": "channel-9", "role": "channel_server", "url": "ws://127.0.0.1:9",
              "http_url": "http://127.0.0.1:9", "pid": int(gone.stdout)}
    ops_cluster.add_process(c.run_dir, record)
    epoch = (await ok(c.run_dir, "ring", "show"))["epoch"]
    forgot = await ok(c.run_dir, "ring", "remove", "channel-9")
    assert forgot["forgotten"] is True and forgot["epoch_after"] == epoch
    assert "channel-9" not in processes(c)

    for args in (("remove", "nosuch"), ("drain", "nosuch"), ("drain", "channel-1")):
        out = await cli(c.run_dir, "ring", *args, "--json")
        assert out.code == 1 and "error" in out.doc, (args, out.stdout)
    for args in (("drain",), ("add", "--name", "bad name!"), ("add", "--timeout", "-1")):
        out = await cli(c.run_dir, "ring", *args)
        assert out.code == 2, (args, out.stderr)
    assert (await ok(c.run_dir, "ring", "show"))["epoch"] == epoch


def test_update_ring_loses_no_concurrent_write(tmp_path):
    """Two writers adding members at once: every member and every epoch bump lands."""
    import redis

    from tests import conftest

    settings = conftest.test_settings()  # a fresh Redis prefix: no cluster, no database
    per_writer = 15

    def writer(tag: str) -> None:
        for i in range(per_writer):
            ops_cluster.update_ring(settings, lambda config, n=f"{tag}-{i}": config.with_member(
                n, Member(url=f"ws://{n}:1")))

    try:
        threads = [threading.Thread(target=writer, args=(t,)) for t in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        config = ops_cluster.read_ring(settings)
        assert len(config.members) == 2 * per_writer and config.epoch == 2 * per_writer
        before, after = ops_cluster.update_ring(settings, lambda config: None)
        assert before == after and after.epoch == config.epoch
    finally:
        client = redis.Redis.from_url(settings.redis_url)
        client.delete(registry.ring_key(settings.redis_prefix))
        client.close()
