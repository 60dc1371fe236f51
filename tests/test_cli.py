"""The CLI contracts of DESIGN.md, run as a real subprocess against the test cluster."""

from __future__ import annotations

import json
import subprocess
import sys


def cli(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ops.cli", "--run-dir", str(cluster.run_dir),
                           *args], capture_output=True, text=True, timeout=60)


def test_status_json_contract(cluster):
    out = cli(cluster, "status", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["webapp_url"] == cluster.api and doc["webapp_url"].endswith("/api/")
    roles = sorted(p["role"] for p in doc["processes"])
    assert roles == sorted(["webapp", "admin_server", "presence_server"]
                           + ["channel_server"] * 3 + ["gateway_server"] * 2)
    for proc in doc["processes"]:
        assert set(proc) >= {"name", "role", "pid", "address", "healthy"}
        assert proc["healthy"] is True and proc["pid"] > 0
    assert doc["ring"]["epoch"] >= 1
    assert doc["ring"]["members"] == ["channel-1", "channel-2", "channel-3"]
    assert doc["healthy"] is True and doc["problems"] == []
    for slot, detail in doc["ring"]["detail"].items():
        assert detail["state"] == "active" and detail["process"] == slot
        assert detail["alive"] is True and detail["url"].startswith("ws://")


def test_seed_json_creates_working_tokens(cluster):
    out = cli(cluster, "seed", "--users", "4", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["webapp_url"] == cluster.api
    assert len(doc["users"]) == 4 and doc["bot"]["token"].startswith("xoxb-")
    assert all(u["token"].startswith("xoxp-") and u["id"].startswith("U") for u in doc["users"])
    from slack_sdk import WebClient

    who = WebClient(token=doc["users"][3]["token"], base_url=doc["webapp_url"]).auth_test()
    assert who["user_id"] == doc["users"][3]["id"]


def test_ring_show(cluster):
    out = cli(cluster, "ring", "show", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["vnodes"] == 150
    assert [m["name"] for m in doc["members"]] == ["channel-1", "channel-2", "channel-3"]
    assert abs(sum(m["share"] for m in doc["members"]) - 1) < 1e-3
    assert all(0.2 < m["share"] < 0.47 for m in doc["members"])
    assert all(m["state"] == "active" and m["alive"] and m["process"] == m["name"]
               and isinstance(m["subscriptions"], int) for m in doc["members"])
    assert doc["standby"] == []
    text = cli(cluster, "ring", "show")
    assert "150 vnodes" in text.stdout and "channel-2" in text.stdout


def test_status_without_cluster_says_so(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ops.cli", "--run-dir", str(tmp_path),
                          "status", "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["processes"] == [] and doc["error"] == f"no cluster running in {tmp_path}"
