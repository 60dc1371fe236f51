"""Two clusters on one machine stay apart: a second `up` on a Redis prefix that a live
cluster uses is refused and touches nothing; a database prefix the SQL user may not use is
a one-line error; commands on a run dir without a cluster say so. The CLI runs as a
subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import redis

from cluster import registry
from cluster.settings import Settings
from ops import cluster as ops_cluster
from ops.isolation import describe_db_error
from ops.leases import live_leases


def cli(run_dir: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ops.cli", "--run-dir", str(run_dir), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def up(run_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A small `up`; stopped again at once should it (wrongly) succeed."""
    out = cli(run_dir, "up", "--channels", "1", "--gateways", "1", "--ring-managers", "0",
              "--demo-users", "1", env=env)
    if out.returncode == 0:
        cli(run_dir, "down")
    return out


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_commands_without_a_cluster_say_so(tmp_path):
    out = cli(tmp_path, "status", "--json")
    doc = json.loads(out.stdout)
    assert out.returncode == 1 and doc["processes"] == [] and doc["healthy"] is False
    assert doc["error"] == f"no cluster running in {tmp_path}"
    out = cli(tmp_path, "ring", "show", "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"] == f"no cluster running in {tmp_path}"
    out = cli(tmp_path, "ring", "show")
    assert out.returncode == 1 and f"no cluster running in {tmp_path}" in out.stderr
    for args in (("add", "--dry-run"), ("drain", "channel-1"), ("remove", "channel-1")):
        out = cli(tmp_path, "ring", *args, "--json")
        assert out.returncode == 1 and "no cluster running" in json.loads(out.stdout)["error"]
    assert list(tmp_path.iterdir()) == []


def test_second_up_on_a_live_redis_prefix_is_refused(cluster, tmp_path):
    key = registry.ring_key(cluster.settings.redis_prefix)
    client = redis.Redis.from_url(cluster.settings.redis_url)
    ring_before = client.get(key)
    run_dir = tmp_path / "second"
    try:
        line = one_line_error(up(run_dir, {
            "BACKCHANNEL_REDIS_PREFIX": cluster.settings.redis_prefix,
            "BACKCHANNEL_DB_PREFIX": cluster.settings.db_prefix}))
        assert client.get(key) == ring_before
    finally:
        client.close()
    assert repr(cluster.settings.redis_prefix) in line and "channel-1" in line
    assert not run_dir.exists()  # nothing written, nothing started
    ours = {p["pid"] for p in ops_cluster.require_state(cluster.run_dir)["processes"]}
    leased = {entry["pid"] for entries in live_leases(cluster.settings).values()
              for entry in entries.values()}
    assert leased <= ours


def test_db_prefix_without_grant_is_one_clear_line(tmp_path):
    prefix = f"bctest:{secrets.token_hex(4)}:"
    line = one_line_error(up(tmp_path, {"BACKCHANNEL_DB_PREFIX": "nope_x",
                                        "BACKCHANNEL_REDIS_PREFIX": prefix}))
    assert "'nope_x_directory'" in line and "'backchannel'@" in line
    assert "GRANT ALL PRIVILEGES ON `nope_x%`.*" in line
    assert not (tmp_path / "cluster.json").exists()
    client = redis.Redis.from_url(Settings().redis_url)
    try:
        assert list(client.scan_iter(match=prefix + "*")) == []
    finally:
        client.close()


def test_db_errors_are_explained_without_a_server():
    settings = Settings(db_prefix="nope_x", mysql_user="bc")
    denied = describe_db_error(settings, 1142, "CREATE command denied to user 'bc'@'10.0.0.2' "
                               "for table `nope_x_chat_x_80`.`channels`")
    assert denied is not None
    assert "'bc'@'10.0.0.2'" in denied and "'nope_x_chat_x_80'" in denied
    assert "GRANT ALL PRIVILEGES ON `nope_x%`.* TO 'bc'@'10.0.0.2'" in denied
    assert "mysql_password" in (describe_db_error(settings, 1045, "Access denied") or "")
    assert "cannot reach MariaDB" in (describe_db_error(settings, 2003, "refused") or "")
    assert describe_db_error(settings, 1064, "syntax") is None
    assert "\n" not in denied
