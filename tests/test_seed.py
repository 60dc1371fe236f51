"""Seeding: profiles of seeded users, adding users to an existing workspace (internal
endpoint and `backchannel seed --team`), team_join on the RTM stream of that workspace
only, and bulk seeds spanning several write chunks."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import trio

from ops import cluster as ops_cluster
from tests.conftest import rtm_session
from tests.test_api_users import events, web
from webapp.store.seeding import CHUNK


def add_users(cluster: Any, team_id: str, n: int) -> dict[str, Any]:
    return ops_cluster.seed(cluster.run_dir, n, team=team_id)


def test_seed_output_and_profiles(cluster):
    doc = cluster.seed(3)
    assert set(doc) == {"webapp_url", "team", "users", "bot", "channels"}
    assert set(doc["bot"]) == {"id", "bot_id", "name", "token"}
    assert all(set(u) == {"id", "name", "token"} for u in doc["users"])
    assert doc["channels"] == [{"id": doc["channels"][0]["id"], "name": "general"}]
    client = web(cluster, doc["users"][1]["token"])
    people = {m["name"]: m for m in client.users_list()["members"]}
    assert set(people) == {"user1", "user2", "user3", "backchannel-bot"}
    owner = people["user1"]
    assert owner["is_admin"] and owner["is_owner"] and owner["is_primary_owner"]
    for i in (2, 3):
        user = people[f"user{i}"]
        assert not user["is_admin"] and not user["is_owner"]
        assert user["real_name"] == f"User {i}" and user["profile"]["display_name"] == f"user{i}"
        assert user["profile"]["email"] == f"user{i}@demo.example"
        assert user["profile"]["first_name"] == "User" and user["profile"]["last_name"] == str(i)
    assert len({m["tz"] for m in people.values() if not m["is_bot"]}) == 3
    assert people["backchannel-bot"]["is_bot"] is True
    # the identity the webapp reads for checks knows user1 is the admin
    assert client.auth_test()["user_id"] == doc["users"][1]["id"]


def test_add_users_to_a_workspace(cluster):
    ws = cluster.seed(2)
    team, general = ws["team"]["id"], ws["channels"][0]["id"]
    before = len(events(cluster, team))
    general_before = len(events(cluster, general))
    added = add_users(cluster, team, 2)
    assert [u["name"] for u in added["users"]] == ["user3", "user4"]
    assert added["team"]["id"] == team and added["channels"] == ws["channels"]
    assert added["bot"] == {k: ws["bot"][k] for k in ("id", "bot_id", "name")}
    newcomer = added["users"][1]
    client = web(cluster, newcomer["token"])
    assert client.auth_test()["user_id"] == newcomer["id"]
    me = client.users_info(user=newcomer["id"])["user"]
    assert me["profile"]["email"] == "user4@demo.example" and not me["is_admin"]
    # they are members of #general: they may post there
    assert client.chat_postMessage(channel=general, text="hello")["ok"]
    joins = [e["event"] for e in events(cluster, team)[before:]]
    assert [e["type"] for e in joins] == ["team_join", "team_join"]
    assert [e["user"]["id"] for e in joins] == [u["id"] for u in added["users"]]
    assert joins[1]["user"]["profile"]["email"] == "user4@demo.example"
    joined = [e["event"] for e in events(cluster, general)[general_before:]]
    assert [(e["type"], e["user"]) for e in joined[:2]] == [
        ("member_joined_channel", u["id"]) for u in added["users"]]
    personal = [e["event"] for e in events(cluster, newcomer["id"])]
    assert [(e["type"], e["channel"]["id"]) for e in personal] == [("channel_joined", general)]
    # numbering goes on after the highest user
    assert [u["name"] for u in add_users(cluster, team, 1)["users"]] == ["user5"]


def test_seed_cli_adds_users(cluster):
    ws = cluster.seed(1)
    out = subprocess.run([sys.executable, "-m", "ops.cli", "--run-dir", str(cluster.run_dir),
                          "seed", "--team", ws["team"]["id"], "--users", "2", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["webapp_url"] == cluster.api and doc["team"]["id"] == ws["team"]["id"]
    assert [u["name"] for u in doc["users"]] == ["user2", "user3"]
    who = web(cluster, doc["users"][0]["token"]).auth_test()
    assert who["user_id"] == doc["users"][0]["id"] and who["team_id"] == ws["team"]["id"]
    text = subprocess.run([sys.executable, "-m", "ops.cli", "--run-dir", str(cluster.run_dir),
                           "seed", "--team", ws["team"]["id"], "--users", "1"],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "user4" in text.stdout, text.stderr


def test_seed_into_a_missing_workspace_is_refused(cluster):
    out = subprocess.run([sys.executable, "-m", "ops.cli", "--run-dir", str(cluster.run_dir),
                          "seed", "--team", "TNOSUCHTEAM", "--users", "2", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "team_not_found" in json.loads(out.stdout)["error"]
    resp = httpx.post(cluster.root + "/internal/seed", json={"users": 1, "team_id": ["T"]},
                      headers=cluster.internal_headers(), timeout=10)
    assert resp.json() == {"ok": False, "error": "invalid_arguments"}


async def test_team_join_reaches_the_workspace_and_no_other(cluster):
    ws, other = cluster.seed(2), cluster.seed(1)
    async with rtm_session(cluster, ws["users"][0]["token"]) as a, rtm_session(
        cluster, ws["users"][1]["token"]
    ) as b, rtm_session(cluster, other["users"][0]["token"]) as c:
        added = await trio.to_thread.run_sync(lambda: add_users(cluster, ws["team"]["id"], 1))
        newcomer = added["users"][0]["id"]
        for rtm in (a, b):
            event = await rtm.next({"type": "team_join"})
            assert event["user"]["id"] == newcomer and event["user"]["name"] == "user3"
            # #general's stream: it may come before or after the team stream's event
            joined = await _seen_or_next(rtm, lambda e: e.get("type") == "member_joined_channel"
                                         and e.get("user") == newcomer)
            assert joined["channel"] == ws["channels"][0]["id"]
        marker = await trio.to_thread.run_sync(lambda: add_users(
            cluster, other["team"]["id"], 1))
        event = await c.next({"type": "team_join"})
        assert event["user"]["id"] == marker["users"][0]["id"]
        assert not [e for e in c.seen if newcomer in json.dumps(e)]


def test_bulk_seed_spans_chunks(cluster):
    """More users than one write chunk, seeded and then added: every one is listed (over
    two users.list pages), in #general once, and told so on its personal stream."""
    n = CHUNK + 7
    ws = cluster.seed(n)
    team, general = ws["team"]["id"], ws["channels"][0]["id"]
    added = add_users(cluster, team, CHUNK + 3)["users"]
    assert [added[0]["name"], added[-1]["name"]] == [f"user{n + 1}", f"user{n + CHUNK + 3}"]
    everyone = ws["users"] + added
    client = web(cluster, added[-1]["token"])
    first = client.users_list()
    rest = client.users_list(cursor=first["response_metadata"]["next_cursor"])
    assert len(first["members"]) == 1000 and rest["response_metadata"]["next_cursor"] == ""
    listed = [m["id"] for m in first["members"] + rest["members"]]
    assert sorted(listed) == sorted([u["id"] for u in everyone] + [ws["bot"]["id"]])
    joins = [e["event"]["user"] for e in _all_events(cluster, general)
             if e["event"]["type"] == "member_joined_channel"]
    # user1 created it; the others, the bot, then the added users joined, once, in order
    assert joins == [u["id"] for u in ws["users"]] + [ws["bot"]["id"]] + [
        u["id"] for u in added]
    for user in (ws["users"][1], ws["users"][-1], added[0], added[-1]):
        personal = [e["event"] for e in events(cluster, user["id"])]
        assert [(e["type"], e["channel"]["id"]) for e in personal] == [
            ("channel_joined", general)]
    team_joins = [e["event"]["user"]["id"] for e in _all_events(cluster, team)
                  if e["event"]["type"] == "team_join"]
    assert team_joins == [u["id"] for u in added]
    assert client.chat_postMessage(channel=general, text="last one in")["ok"]


async def _seen_or_next(rtm: Any, match: Any) -> dict[str, Any]:
    for event in rtm.seen:
        if match(event):
            return event
    return await rtm.next(match)


def _all_events(cluster: Any, stream: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        resp = httpx.get(cluster.root + "/internal/events",
                         params={"stream": stream, "after_seq": len(out), "limit": 1000},
                         headers=cluster.internal_headers(), timeout=10)
        page = resp.json()["events"]
        if not page:
            return out
        out += page
