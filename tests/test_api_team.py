"""team.info, bots.info, usergroups.* and emoji.list through slack_sdk against the running
cluster, with their bad inputs (refused calls change nothing), and the subteam_* events on
the workspace stream."""

from __future__ import annotations

import json
import secrets

import trio

from tests.conftest import rtm_session
from tests.test_api_users import directory_db, error_of, events, raw, web

# --- team.info / bots.info -------------------------------------------------------------------


def test_team_info(cluster, ws, other):
    client = web(cluster, ws["users"][1]["token"])
    team = client.team_info()["team"]
    assert team["id"] == ws["team"]["id"] and team["name"] == ws["team"]["name"]
    assert team["domain"] == ws["team"]["domain"] and team["email_domain"] == ""
    assert team["icon"]["image_default"] is True
    assert all(team["icon"][f"image_{s}"].startswith("https://")
               for s in (34, 44, 68, 88, 102, 132, 230))
    assert set(team) >= {"avatar_base_url", "is_verified", "url"}
    assert client.team_info(team=ws["team"]["id"])["team"] == team
    assert client.team_info(domain=ws["team"]["domain"])["team"] == team
    assert error_of(lambda: client.team_info(team=other["team"]["id"])) == "team_not_found"
    assert error_of(lambda: client.team_info(domain="no-such-domain")) == "team_not_found"
    assert raw(cluster, "team.info", ws["users"][1]["token"], team=["T1"])["error"] \
        == "invalid_arguments"


def test_bots_info(cluster, ws, other):
    client = web(cluster, ws["users"][2]["token"])
    bot = client.bots_info(bot=ws["bot"]["bot_id"])["bot"]
    assert bot["id"] == ws["bot"]["bot_id"] and bot["user_id"] == ws["bot"]["id"]
    assert bot["name"] == "backchannel-bot" and bot["deleted"] is False
    assert bot["app_id"].startswith("A") and isinstance(bot["updated"], int)
    assert set(bot["icons"]) == {"image_36", "image_48", "image_72"}
    # the bot user's profile names the same app
    profile = client.users_info(user=ws["bot"]["id"])["user"]["profile"]
    assert profile["api_app_id"] == bot["app_id"]
    token = ws["users"][2]["token"]
    for body in ({}, {"bot": "B"}, {"bot": "BNOSUCHBOT1"}, {"bot": other["bot"]["bot_id"]},
                 {"bot": ws["bot"]["id"]}, {"bot": 5}):
        assert raw(cluster, "bots.info", token, **body)["error"] == "bot_not_found", body
    assert raw(cluster, "bots.info", token, bot=ws["bot"]["bot_id"],
               team_id=other["team"]["id"])["error"] == "team_not_found"


# --- emoji.list ------------------------------------------------------------------------------


def test_emoji_list(cluster, ws, other):
    client = web(cluster, ws["users"][0]["token"])
    empty = client.emoji_list()
    assert empty["emoji"] == {} and empty["cache_ts"] == "0.000000"
    assert client.emoji_list(include_categories=True)["emoji"] == {}
    with directory_db(cluster) as cur:  # no API adds emoji yet (admin.emoji.add)
        cur.executemany("INSERT INTO emoji (team_id, name, value, updated) VALUES "
                        "(%s, %s, %s, %s)",
                        [(ws["team"]["id"], "shipit", "https://img.example/shipit.png", 1700),
                         (ws["team"]["id"], "squirrel", "alias:shipit", 1800),
                         (other["team"]["id"], "theirs", "https://img.example/t.png", 1900)])
    reply = client.emoji_list()
    assert reply["emoji"] == {"shipit": "https://img.example/shipit.png",
                              "squirrel": "alias:shipit"}
    assert reply["cache_ts"] == "1800.000000"
    assert raw(cluster, "emoji.list", ws["users"][0]["token"],
               include_categories="sometimes")["error"] == "invalid_arguments"


# --- usergroups.* ----------------------------------------------------------------------------


def _name() -> str:
    return "Team " + secrets.token_hex(3)


def test_usergroup_create_list_and_members(cluster, ws):
    alice, bob, carol = ws["users"]
    client = web(cluster, alice["token"])
    team = ws["team"]["id"]
    before = len(events(cluster, team))
    name = _name()
    group = client.usergroups_create(name=name, handle="oncall-" + secrets.token_hex(2),
                                     description="Pager duty",
                                     channels=ws["channels"][0]["id"],
                                     include_count=True)["usergroup"]
    assert group["id"].startswith("S") and group["team_id"] == team
    assert group["name"] == name and group["description"] == "Pager duty"
    assert group["is_usergroup"] is True and group["date_delete"] == 0
    assert group["created_by"] == alice["id"] and group["user_count"] == 0
    assert group["prefs"] == {"channels": [ws["channels"][0]["id"]], "groups": []}
    assert "users" not in group
    # no handle: one is made from the name
    made = client.usergroups_create(name="Design Crew " + secrets.token_hex(2))["usergroup"]
    assert made["handle"].startswith("design-crew-")

    updated = web(cluster, bob["token"]).usergroups_users_update(
        usergroup=group["id"], users=[alice["id"], carol["id"]], include_count=True)
    assert sorted(updated["usergroup"]["users"]) == sorted([alice["id"], carol["id"]])
    assert updated["usergroup"]["user_count"] == 2
    assert updated["usergroup"]["updated_by"] == bob["id"]
    listed = client.usergroups_users_list(usergroup=group["id"])["users"]
    assert sorted(listed) == sorted([alice["id"], carol["id"]])
    # replace: carol out, bob in
    web(cluster, carol["token"]).usergroups_users_update(usergroup=group["id"],
                                                         users=f"{alice['id']},{bob['id']}")
    assert sorted(client.usergroups_users_list(usergroup=group["id"])["users"]) \
        == sorted([alice["id"], bob["id"]])

    groups = {g["id"]: g for g in client.usergroups_list()["usergroups"]}
    assert {group["id"], made["id"]} <= set(groups)
    assert "users" not in groups[group["id"]] and "user_count" not in groups[group["id"]]
    full = {g["id"]: g for g in client.usergroups_list(include_users=True, include_count=True,
                                                         include_disabled=True)["usergroups"]}
    assert sorted(full[group["id"]]["users"]) == sorted([alice["id"], bob["id"]])
    assert full[group["id"]]["user_count"] == 2 and full[made["id"]]["users"] == []

    changes = [e["event"] for e in events(cluster, team)[before:]]
    assert [e["type"] for e in changes] == [
        "subteam_created", "subteam_created", "subteam_members_changed", "subteam_updated",
        "subteam_members_changed", "subteam_updated"]
    first, second = changes[2], changes[4]
    assert first["subteam_id"] == group["id"] and first["team_id"] == team
    assert sorted(first["added_users"]) == sorted([alice["id"], carol["id"]])
    assert first["added_users_count"] == "2" and first["removed_users"] == []
    assert second["added_users"] == [bob["id"]] and second["removed_users"] == [carol["id"]]
    assert second["date_previous_update"] == first["date_update"]
    assert sorted(changes[5]["subteam"]["users"]) == sorted([alice["id"], bob["id"]])


def test_usergroup_create_refusals_change_nothing(cluster, ws, other):
    alice = ws["users"][0]
    client = web(cluster, alice["token"])
    taken = client.usergroups_create(name=_name(), handle="taken-" + secrets.token_hex(2))
    taken = taken["usergroup"]
    priv = client.conversations_create(name="priv-" + secrets.token_hex(3), is_private=True)
    outsider_view = web(cluster, ws["users"][1]["token"])
    before = {g["id"] for g in client.usergroups_list(include_disabled=True)["usergroups"]}
    heads = len(events(cluster, ws["team"]["id"]))
    token = alice["token"]
    cases = [
        ({}, "missing_subteam_name"),
        ({"name": "   "}, "missing_subteam_name"),
        ({"name": "x" * 256}, "name_too_long"),
        ({"name": taken["name"]}, "name_already_exists"),
        ({"name": _name(), "handle": taken["handle"]}, "handle_already_exists"),
        ({"name": _name(), "handle": "user2"}, "handle_already_exists"),  # a user's name
        ({"name": _name(), "handle": "general"}, "handle_already_exists"),  # a channel's
        ({"name": _name(), "handle": "here"}, "forbidden_handle"),
        ({"name": _name(), "handle": "Bad Handle"}, "bad_handle"),
        ({"name": _name(), "handle": "x" * 90}, "bad_handle"),
        ({"name": "!!!"}, "bad_handle"),
        ({"name": _name(), "description": "d" * 1001}, "description_too_long"),
        ({"name": _name(), "channels": "nope"}, "invalid_channel_provided"),
        ({"name": _name(), "channels": other["channels"][0]["id"]}, "invalid_channel_provided"),
        ({"name": _name(), "channels": "CNOSUCH0001"}, "invalid_channel_provided"),
        ({"name": _name(), "team_id": other["team"]["id"]}, "invalid_team"),
        ({"name": ["list"]}, "invalid_arguments"),
    ]
    for body, error in cases:
        assert raw(cluster, "usergroups.create", token, **body)["error"] == error, body
    # a private channel is a default only for a member who can see it
    assert error_of(lambda: outsider_view.usergroups_create(
        name=_name(), channels=priv["channel"]["id"])) == "invalid_channel_provided"
    after = {g["id"] for g in client.usergroups_list(include_disabled=True)["usergroups"]}
    assert after == before
    assert len(events(cluster, ws["team"]["id"])) == heads
    mine = client.usergroups_create(name=_name(), channels=priv["channel"]["id"])["usergroup"]
    assert mine["prefs"] == {"channels": [], "groups": [priv["channel"]["id"]]}


def test_usergroup_members_refusals_change_nothing(cluster, ws, other):
    alice, bob = ws["users"][0], ws["users"][1]
    client = web(cluster, alice["token"])
    group = client.usergroups_create(name=_name())["usergroup"]
    client.usergroups_users_update(usergroup=group["id"], users=[bob["id"]])
    theirs = web(cluster, other["users"][0]["token"]).usergroups_create(name=_name())
    theirs = theirs["usergroup"]
    heads = len(events(cluster, ws["team"]["id"]))
    token = alice["token"]
    cases = [
        ({"users": alice["id"]}, "no_such_subteam"),
        ({"usergroup": "SNOSUCH0001", "users": alice["id"]}, "no_such_subteam"),
        ({"usergroup": "oops", "users": alice["id"]}, "no_such_subteam"),
        ({"usergroup": theirs["id"], "users": alice["id"]}, "no_such_subteam"),
        ({"usergroup": 5, "users": alice["id"]}, "no_such_subteam"),
        ({"usergroup": group["id"]}, "no_users_provided"),
        ({"usergroup": group["id"], "users": ","}, "no_users_provided"),
        ({"usergroup": group["id"], "users": "nobody"}, "invalid_users"),
        ({"usergroup": group["id"], "users": f"{alice['id']},UNOSUCH0001"}, "invalid_users"),
        ({"usergroup": group["id"], "users": other["users"][0]["id"]}, "invalid_users"),
        ({"usergroup": group["id"], "users": {"a": 1}}, "invalid_arguments"),
    ]
    for body, error in cases:
        assert raw(cluster, "usergroups.users.update", token, **body)["error"] == error, body
    for body in ({}, {"usergroup": "SNOSUCH0001"}, {"usergroup": theirs["id"]},
                 {"usergroup": 7}):
        assert raw(cluster, "usergroups.users.list", token, **body)["error"] \
            == "no_such_subteam", body
    assert client.usergroups_users_list(usergroup=group["id"])["users"] == [bob["id"]]
    assert theirs["id"] not in {g["id"] for g in client.usergroups_list()["usergroups"]}
    assert raw(cluster, "usergroups.list", token, team_id=other["team"]["id"])["error"] \
        == "invalid_team"
    assert raw(cluster, "usergroups.list", token, include_users="yes")["error"] \
        == "invalid_arguments"
    assert len(events(cluster, ws["team"]["id"])) == heads


async def test_subteam_events_reach_the_workspace_and_no_other(cluster):
    ws, other = cluster.seed(2), cluster.seed(1)
    alice, bob = ws["users"]
    outsider = other["users"][0]
    async with rtm_session(cluster, alice["token"]) as a, rtm_session(
        cluster, bob["token"]
    ) as b, rtm_session(cluster, outsider["token"]) as c:
        group = await trio.to_thread.run_sync(lambda: web(cluster, bob["token"]).usergroups_create(
            name=_name()))
        gid = group["usergroup"]["id"]
        await trio.to_thread.run_sync(lambda: web(cluster, alice["token"])
                                      .usergroups_users_update(usergroup=gid, users=[bob["id"]]))
        for rtm in (a, b):
            created = await rtm.next({"type": "subteam_created"})
            assert created["subteam"]["id"] == gid
            changed = await rtm.next({"type": "subteam_members_changed"})
            assert changed["added_users"] == [bob["id"]]
            updated = await rtm.next({"type": "subteam_updated"})
            assert updated["subteam"]["users"] == [bob["id"]]
        await trio.to_thread.run_sync(lambda: web(cluster, outsider["token"]).usergroups_create(
            name=_name()))
        mine = await c.next({"type": "subteam_created"})
        assert mine["subteam"]["team_id"] == other["team"]["id"]
        assert not [e for e in c.seen if gid in json.dumps(e)]
