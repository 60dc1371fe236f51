"""usergroups.update, usergroups.disable and usergroups.enable through slack_sdk against the
running cluster: the changes, their subteam_updated events on the workspace stream (and on
the RTM sockets of that workspace only), and their bad inputs, which change nothing."""

from __future__ import annotations

import json
import secrets
from typing import Any

import trio

from tests.conftest import rtm_session
from tests.test_api_users import error_of, events, raw, web


def _name() -> str:
    return "Group " + secrets.token_hex(3)


def _handle() -> str:
    return "grp-" + secrets.token_hex(3)


def _group(client: Any, members: list[str] | None = None) -> dict[str, Any]:
    group = client.usergroups_create(name=_name(), handle=_handle(),
                                     description="first")["usergroup"]
    if members:
        client.usergroups_users_update(usergroup=group["id"], users=members)
    return group


def _stored(client: Any, group_id: str) -> dict[str, Any]:
    """The group as usergroups.list shows it (disabled ones included)."""
    listed = client.usergroups_list(include_disabled=True, include_users=True)["usergroups"]
    return next(g for g in listed if g["id"] == group_id)


def _updates_since(cluster: Any, team: str, before: int) -> list[dict[str, Any]]:
    return [e["event"] for e in events(cluster, team)[before:]]


# --- usergroups.update -----------------------------------------------------------------------


def test_update_changes_only_what_is_given(cluster, ws):
    alice, bob, carol = ws["users"]
    client = web(cluster, alice["token"])
    group = _group(client, [alice["id"], carol["id"]])
    general = ws["channels"][0]["id"]
    priv = client.conversations_create(name="ug-" + secrets.token_hex(3),
                                       is_private=True)["channel"]["id"]
    team = ws["team"]["id"]
    before = len(events(cluster, team))
    name, handle = _name(), _handle()
    reply = web(cluster, bob["token"]).usergroups_update(
        usergroup=group["id"], name=f"  {name}  ", handle="@" + handle.upper(),
        include_count=True)["usergroup"]
    assert reply["name"] == name and reply["handle"] == handle
    assert reply["description"] == "first" and reply["prefs"] == group["prefs"]
    assert reply["updated_by"] == bob["id"] and reply["date_update"] > group["date_update"]
    assert sorted(reply["users"]) == sorted([alice["id"], carol["id"]])
    assert reply["user_count"] == 2 and reply["date_delete"] == 0
    assert reply["deleted_by"] is None and reply["created_by"] == alice["id"]

    again = client.usergroups_update(usergroup=group["id"], description="second",
                                     channels=[general, priv])["usergroup"]
    assert again["name"] == name and again["description"] == "second"
    assert again["prefs"] == {"channels": [general], "groups": [priv]}
    assert "user_count" not in again
    # sent empty, description and channels are cleared
    cleared = client.usergroups_update(usergroup=group["id"], description="",
                                       channels="")["usergroup"]
    assert cleared["description"] == "" and cleared["prefs"] == {"channels": [], "groups": []}
    assert _stored(client, group["id"])["name"] == name

    changes = _updates_since(cluster, team, before)
    assert [e["type"] for e in changes] == ["subteam_updated"] * 3
    assert changes[0]["subteam"]["name"] == name
    assert sorted(changes[0]["subteam"]["users"]) == sorted([alice["id"], carol["id"]])
    assert changes[1]["subteam"]["description"] == "second"
    assert changes[2]["subteam"]["prefs"] == {"channels": [], "groups": []}


def test_update_keeping_its_own_name_and_handle(cluster, ws):
    client = web(cluster, ws["users"][0]["token"])
    group = _group(client)
    same = client.usergroups_update(usergroup=group["id"], name=group["name"],
                                    handle=group["handle"])["usergroup"]
    # nothing changed: no conflict with itself, and date_update stays
    assert same["name"] == group["name"] and same["handle"] == group["handle"]
    assert same["date_update"] == group["date_update"]


def test_update_refusals_change_nothing(cluster, ws, other):
    alice, bob = ws["users"][0], ws["users"][1]
    client = web(cluster, alice["token"])
    group = _group(client, [bob["id"]])
    taken = _group(client)
    theirs = web(cluster, other["users"][0]["token"]).usergroups_create(name=_name())
    theirs = theirs["usergroup"]
    priv = client.conversations_create(name="ugp-" + secrets.token_hex(3),
                                       is_private=True)["channel"]["id"]
    before = _stored(client, group["id"])
    heads = len(events(cluster, ws["team"]["id"]))
    gid = group["id"]
    cases = [
        ({"name": _name()}, "no_such_subteam"),
        ({"usergroup": "SNOSUCH0001", "name": _name()}, "no_such_subteam"),
        ({"usergroup": "nope", "name": _name()}, "no_such_subteam"),
        ({"usergroup": 17, "name": _name()}, "no_such_subteam"),
        ({"usergroup": theirs["id"], "name": _name()}, "no_such_subteam"),
        ({"usergroup": gid, "name": taken["name"]}, "name_already_exists"),
        ({"usergroup": gid, "handle": taken["handle"]}, "handle_already_exists"),
        ({"usergroup": gid, "handle": "user3"}, "handle_already_exists"),  # a user's name
        ({"usergroup": gid, "handle": "general"}, "handle_already_exists"),  # a channel's
        ({"usergroup": gid, "handle": "channel"}, "forbidden_handle"),
        ({"usergroup": gid, "handle": "Not A Handle"}, "bad_handle"),
        ({"usergroup": gid, "handle": "h" * 90}, "bad_handle"),
        ({"usergroup": gid, "name": "   "}, "missing_subteam_name"),
        ({"usergroup": gid, "name": "n" * 256}, "name_too_long"),
        ({"usergroup": gid, "description": "d" * 1001}, "description_too_long"),
        ({"usergroup": gid, "channels": "CNOSUCH0001"}, "invalid_channel_provided"),
        ({"usergroup": gid, "channels": "general"}, "invalid_channel_provided"),
        ({"usergroup": gid, "channels": other["channels"][0]["id"]},
         "invalid_channel_provided"),
        ({"usergroup": gid, "name": _name(), "team_id": other["team"]["id"]}, "invalid_team"),
        ({"usergroup": gid, "name": ["a", "list"]}, "invalid_arguments"),
        ({"usergroup": gid, "channels": {"a": 1}}, "invalid_arguments"),
        ({"usergroup": gid, "include_count": "often"}, "invalid_arguments"),
    ]
    for body, error in cases:
        assert raw(cluster, "usergroups.update", alice["token"], **body)["error"] == error, body
    # a private channel is a default only for a member, who can see it
    assert error_of(lambda: web(cluster, ws["users"][2]["token"]).usergroups_update(
        usergroup=gid, channels=priv)) == "invalid_channel_provided"
    assert _stored(client, gid) == before
    assert len(events(cluster, ws["team"]["id"])) == heads


# --- usergroups.disable / usergroups.enable -----------------------------------------------------


def test_disable_hides_the_group_and_enable_brings_it_back(cluster, ws):
    alice, bob, _ = ws["users"]
    client = web(cluster, alice["token"])
    group = _group(client, [alice["id"], bob["id"]])
    team = ws["team"]["id"]
    before = len(events(cluster, team))

    off = web(cluster, bob["token"]).usergroups_disable(usergroup=group["id"],
                                                        include_count=True)["usergroup"]
    assert off["date_delete"] > 0 and off["deleted_by"] == bob["id"]
    assert off["updated_by"] == bob["id"] and off["date_update"] == off["date_delete"]
    assert off["user_count"] == 2 and "users" not in off
    assert group["id"] not in {g["id"] for g in client.usergroups_list()["usergroups"]}
    assert _stored(client, group["id"])["date_delete"] == off["date_delete"]
    assert error_of(lambda: client.usergroups_users_list(usergroup=group["id"])) \
        == "no_such_subteam"
    assert sorted(client.usergroups_users_list(usergroup=group["id"],
                                               include_disabled=True)["users"]) \
        == sorted([alice["id"], bob["id"]])
    # a disabled group can still be edited, and disabling it again changes nothing
    renamed = client.usergroups_update(usergroup=group["id"], description="resting")
    assert renamed["usergroup"]["date_delete"] == off["date_delete"]
    twice = client.usergroups_disable(usergroup=group["id"])["usergroup"]
    assert twice["date_delete"] == off["date_delete"] and twice["deleted_by"] == bob["id"]
    assert "user_count" not in twice

    on = client.usergroups_enable(usergroup=group["id"], include_count=True)["usergroup"]
    assert on["date_delete"] == 0 and on["deleted_by"] is None
    assert on["updated_by"] == alice["id"] and on["user_count"] == 2
    assert on["date_update"] > twice["date_update"]
    assert group["id"] in {g["id"] for g in client.usergroups_list()["usergroups"]}
    assert client.usergroups_enable(usergroup=group["id"])["usergroup"]["date_update"] \
        == on["date_update"]

    changes = _updates_since(cluster, team, before)
    assert [e["type"] for e in changes] == ["subteam_updated"] * 5
    assert changes[0]["subteam"]["date_delete"] == off["date_delete"]
    assert sorted(changes[0]["subteam"]["users"]) == sorted([alice["id"], bob["id"]])
    assert changes[3]["subteam"]["date_delete"] == 0


def test_disable_enable_refusals_change_nothing(cluster, ws, other):
    alice = ws["users"][0]
    client = web(cluster, alice["token"])
    group = _group(client)
    theirs = web(cluster, other["users"][0]["token"]).usergroups_create(name=_name())
    theirs = theirs["usergroup"]
    heads = len(events(cluster, ws["team"]["id"]))
    other_heads = len(events(cluster, other["team"]["id"]))
    for name in ("usergroups.disable", "usergroups.enable"):
        for body, error in (
            ({}, "no_such_subteam"),
            ({"usergroup": ""}, "no_such_subteam"),
            ({"usergroup": "SNOSUCH0001"}, "no_such_subteam"),
            ({"usergroup": "C123"}, "no_such_subteam"),
            ({"usergroup": ["S1"]}, "no_such_subteam"),
            ({"usergroup": theirs["id"]}, "no_such_subteam"),
            ({"usergroup": group["id"], "team_id": other["team"]["id"]}, "invalid_team"),
            ({"usergroup": group["id"], "include_count": "lots"}, "invalid_arguments"),
        ):
            assert raw(cluster, name, alice["token"], **body)["error"] == error, (name, body)
    assert _stored(client, group["id"])["date_delete"] == 0
    theirs_now = web(cluster, other["users"][0]["token"]).usergroups_list()["usergroups"]
    assert [g["date_delete"] for g in theirs_now if g["id"] == theirs["id"]] == [0]
    assert len(events(cluster, ws["team"]["id"])) == heads
    assert len(events(cluster, other["team"]["id"])) == other_heads


async def test_subteam_updated_reaches_the_workspace_and_no_other(cluster):
    ws, other = cluster.seed(2), cluster.seed(1)
    alice, bob = ws["users"]
    async with rtm_session(cluster, alice["token"]) as a, rtm_session(
        cluster, bob["token"]
    ) as b, rtm_session(cluster, other["users"][0]["token"]) as c:
        def work() -> str:
            client = web(cluster, alice["token"])
            group = _group(client)
            client.usergroups_update(usergroup=group["id"], name="Renamed " + group["handle"])
            client.usergroups_disable(usergroup=group["id"])
            return group["id"]

        gid = await trio.to_thread.run_sync(work)
        for rtm in (a, b):
            renamed = await rtm.next({"type": "subteam_updated"})
            assert renamed["subteam"]["id"] == gid
            assert renamed["subteam"]["name"].startswith("Renamed ")
            disabled = await rtm.next({"type": "subteam_updated"})
            assert disabled["subteam"]["date_delete"] > 0
        # the other workspace's socket hears its own workspace's events, none of these
        await trio.to_thread.run_sync(
            lambda: web(cluster, other["users"][0]["token"]).usergroups_create(name=_name()))
        await c.next({"type": "subteam_created"})
        assert not [e for e in c.seen if gid in json.dumps(e)]
