"""`backchannel bench fanout` at small scale, for real: a cluster of processes, RTM clients
in their own process, posts through the Web API. Checks the report's shape and that every
client got every message once; the figures themselves are not judged (no timing
thresholds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops import cli, fanoutbench
from ops.fanoutbench import Options, parse_cpus
from tests.conftest import private_cluster

MEMBERS, MESSAGES = 20, 30


def _check(doc: dict[str, Any], members: int, messages: int) -> None:
    d = doc["deliveries"]
    assert doc["posts"]["accepted"] == messages
    assert doc["posts"]["failed"] == 0
    assert d["expected"] == d["received"] == members * messages
    assert d["lost"] == d["duplicates"] == d["reordered"] == 0
    assert d["per_s"] > 0
    assert doc["clients"] == {"connected": members, "complete": members, "kicked": 0,
                              "goodbye": 0}
    latency = doc["latency_ms"]
    assert latency["n"] == members * messages
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    cpu = doc["cpu"]
    assert set(cpu["roles"]) == {*fanoutbench.CLUSTER_ROLES, "mariadb", "redis"}
    # every role the cluster runs did some work for the posts, the clients too
    for role in ("webapp", "admin_server", "channel_server", "gateway_server"):
        assert cpu["roles"][role]["cpu_s"] > 0, role
    assert cpu["cluster_us_per_delivery"] > 0 and cpu["post_path_us_per_post"] > 0
    assert cpu["window_s"] > 0 and cpu["clients_cpu_s"] >= 0
    assert set(cpu["idle_busy"]) == set(cpu["connect_cpu_s"]) == set(cpu["roles"])
    assert cpu["connect_cpu_s"]["gateway_server"] > 0
    connections = sum(m["connections"] for m in doc["memory"].values())
    assert connections == members
    for m in doc["memory"].values():
        assert m["rss_kb_before"] > 0 and m["rss_kb_connected"] > 0
    assert fanoutbench.clean(doc)
    assert "lost 0, duplicates 0" in fanoutbench.text(doc)


def test_unpaced_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with private_cluster(tmp_path / "run") as c:
        code = cli.main(["--run-dir", str(c.run_dir), "bench", "fanout", "--members",
                         str(MEMBERS), "--messages", str(MESSAGES), "--rate", "0",
                         "--no-pin", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["rate"] == 0 and doc["pinning"] is None and doc["gateways"] == 1
    assert doc["cluster"] == {"own": False, "run_dir": str(c.run_dir)}
    _check(doc, MEMBERS, MESSAGES)


def test_paced_own_cluster_two_gateways_pinned_everywhere() -> None:
    """A throwaway cluster (rate limit raised, wiped afterwards); pinned to every cpu, so
    that the pinning and its undoing run without taking cpus from anyone else."""
    everywhere = frozenset(os.sched_getaffinity(0))
    opts = Options(members=MEMBERS, messages=MESSAGES, rate=50, gateways=2,
                   pin_cluster=everywhere, pin_clients=everywhere, own_cluster=True)
    doc = fanoutbench.run(Path("/nonexistent"), opts)
    assert doc["cluster"]["own"] is True
    assert doc["rate_limit_per_minute"] == fanoutbench.OWN_RATE_LIMIT
    assert doc["gateways"] == 2 and len(doc["memory"]) == 2
    assert doc["pinning"] == {"cluster": sorted(everywhere), "clients": sorted(everywhere)}
    _check(doc, MEMBERS, MESSAGES)


def test_pinning_is_undone() -> None:
    """Inside the block every thread of a process is on the given cpu; afterwards a cluster
    process is back where it was, and MariaDB and Redis (shared) on every cpu."""
    all_cpus = set(range(os.cpu_count() or 1))
    first = frozenset({min(all_cpus)})
    code = "import sys, threading; threading.Thread(target=sys.stdin.read).start(); " \
           "print('ready', flush=True); sys.stdin.read()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for proc in procs:  # both threads exist before pinning
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        server, shared = (p.pid for p in procs)
        os.sched_setaffinity(shared, first)  # as if someone had left it on one cpu
        before = os.sched_getaffinity(server)
        with fanoutbench.pinned({"webapp": [server], "redis": [shared]}, first):
            for pid in (server, shared):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    assert os.sched_getaffinity(int(tid)) == first
        assert os.sched_getaffinity(server) == before
        assert os.sched_getaffinity(shared) == all_cpus
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_cpu_lists() -> None:
    assert parse_cpus("1") == {1}
    assert parse_cpus("0,2") == {0, 2}
    assert parse_cpus("0-3") == {0, 1, 2, 3}
    with pytest.raises(ValueError):
        parse_cpus("x")


def test_cpu_seconds_of_this_process_grow() -> None:
    before = fanoutbench.cpu_seconds(os.getpid())
    # burn until the counter (clock ticks) moves: a condition, not a duration
    while fanoutbench.cpu_seconds(os.getpid()) == before:
        sum(range(10_000))
    assert fanoutbench.cpu_seconds(os.getpid()) > before
    assert fanoutbench.cpu_seconds(2**22 + 1) == 0.0  # no such process
