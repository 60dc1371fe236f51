"""`backchannel bench api`, tiny: the command builds a workspace through the product, lists
it from concurrent clients following cursors, and reports; it checks its own listings (no
duplicates, the same items every time). Timings are never asserted."""

from __future__ import annotations

import json

import pymysql
import pytest
import redis

from ops import apibench
from ops.cli import main

TINY = ["--users", "20", "--channels", "5", "--members", "3", "--clients", "2",
        "--rounds", "2"]


def bench(capsys, run_dir, *argv: str) -> tuple[int, dict]:
    code = main(["--run-dir", str(run_dir), "bench", "api", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def first(cluster) -> dict:
    """One tiny run against the shared cluster (module-scoped: a cluster run is slow)."""
    opts = apibench.Options(users=20, channels=5, members=3, clients=2, rounds=2)
    return apibench.run(cluster.run_dir, opts)


def test_report_shape_and_listings(first):
    assert apibench.clean(first)
    assert first["users"] >= 21  # the 20 seeded users and the bot
    assert first["clients"] == 2 and first["channels_created"] == 5
    # client 0 created channels 0, 2, 4 (0 is private), client 1 channels 1, 3: each sees
    # #general and the 4 public ones, client 0 also its private one
    assert first["channels_listed"] == {"min": 5, "max": 6}
    assert set(first["build"]) == {"seed_s", "channels_s"}
    for name in apibench.PHASES:
        phase = first[name]
        assert phase["listing_ms"]["n"] == 2 * 2  # clients x rounds
        assert phase["page_ms"]["n"] >= phase["listing_ms"]["n"]
        assert phase["duplicates"] == phase["inconsistent"] == phase["ratelimited"] == 0
        assert phase["requests_per_s"] > 0
    assert first["users_list"]["params"] == {"limit": 200}
    assert first["users_list_default"]["params"] == {}


def test_reuse_a_team_adds_only_clients(cluster, first, capsys):
    code, doc = bench(capsys, cluster.run_dir, "--team", first["team"],
                      "--clients", "1", "--rounds", "1")
    assert code == 0, doc
    assert doc["team"] == first["team"] and doc["build"] is None
    assert doc["users"] == first["users"] + 1  # the new client
    # a new user sees the public channels only
    assert doc["channels_listed"] == {"min": 5, "max": 5}


def test_cli_text_and_no_cluster(tmp_path, capsys):
    assert main(["--run-dir", str(tmp_path), "bench", "api", *TINY]) == 1
    assert "no cluster" in capsys.readouterr().err
    code, doc = bench(capsys, tmp_path, *TINY)
    assert code == 1 and "no cluster" in doc["error"]


def test_own_cluster_is_wiped(cluster, tmp_path, capsys):
    code, doc = bench(capsys, tmp_path, "--own-cluster", "--users", "5", "--channels", "2",
                      "--members", "1", "--clients", "1", "--rounds", "1")
    assert code == 0, doc
    about = doc["cluster"]
    assert about["own"] is True and about["db_prefix"].startswith("backchannelbench_")
    settings = cluster.settings
    conn = pymysql.connect(host=settings.mysql_host, port=settings.mysql_port,
                           user=settings.mysql_user, password=settings.mysql_password)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE %s", (about["db_prefix"] + "%",))
            assert cur.fetchall() == ()
    finally:
        conn.close()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        assert list(client.scan_iter(match=about["redis_prefix"] + "*")) == []
    finally:
        client.close()
