"""users.*: list, info, lookupByEmail, profile.get/set, prefs.get/set, setPresence, through
slack_sdk against the running cluster, with their bad inputs (refused calls change
nothing), and user_change on the RTM stream of every member of the workspace only."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pymysql
import pytest
import trio
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.conftest import rtm_session

USER_KEYS = {"id", "team_id", "name", "deleted", "color", "real_name", "tz", "tz_label",
             "tz_offset", "profile", "is_admin", "is_owner", "is_primary_owner",
             "is_restricted", "is_ultra_restricted", "is_bot", "is_app_user", "updated",
             "is_email_confirmed"}
PROFILE_KEYS = {"title", "phone", "skype", "real_name", "real_name_normalized",
                "display_name", "display_name_normalized", "fields", "status_text",
                "status_emoji", "status_expiration", "avatar_hash", "first_name",
                "last_name", "team", "image_24", "image_32", "image_48", "image_72",
                "image_192", "image_512"}


def web(cluster: Any, token: str) -> WebClient:
    return WebClient(token=token, base_url=cluster.api)


def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as exc:
        call()
    return exc.value.response["error"]


def events(cluster: Any, stream: str) -> list[dict[str, Any]]:
    resp = httpx.get(cluster.root + "/internal/events",
                     params={"stream": stream, "after_seq": 0, "limit": 1000},
                     headers=cluster.internal_headers(), timeout=10)
    return resp.json()["events"]


def kinds(cluster: Any, stream: str) -> list[str]:
    return [e["event"]["type"] for e in events(cluster, stream)]


def raw(cluster: Any, method: str, token: str, **body: Any) -> dict[str, Any]:
    """A call with a body slack_sdk would not send (wrong types, missing arguments)."""
    return httpx.post(cluster.api + method, json=body, timeout=10,
                      headers={"Authorization": f"Bearer {token}"}).json()


@contextlib.contextmanager
def directory_db(cluster: Any) -> Iterator[Any]:
    """A cursor on the directory keyspace, for what no API can do yet (make an admin)."""
    s = cluster.settings
    conn = pymysql.connect(host=s.mysql_host, port=s.mysql_port, user=s.mysql_user,
                           password=s.mysql_password, database=s.db_name("directory"),
                           autocommit=True)
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()




# --- users.list / users.info / users.lookupByEmail -----------------------------------------


def test_users_list_gives_every_user_with_a_profile(cluster, ws, other):
    client = web(cluster, ws["users"][1]["token"])
    reply = client.users_list()
    members = {m["id"]: m for m in reply["members"]}
    assert set(members) == {u["id"] for u in ws["users"]} | {ws["bot"]["id"]}
    assert reply["response_metadata"]["next_cursor"] == ""
    assert isinstance(reply["cache_ts"], int)
    for m in members.values():
        assert USER_KEYS <= set(m) and PROFILE_KEYS <= set(m["profile"])
        assert m["team_id"] == ws["team"]["id"] and "locale" not in m
    first = members[ws["users"][0]["id"]]
    assert first["is_admin"] and first["is_owner"] and first["is_primary_owner"]
    third = members[ws["users"][2]["id"]]
    assert third["name"] == "user3" and not third["is_admin"] and not third["is_bot"]
    assert third["profile"]["email"] == "user3@demo.example"
    assert third["profile"]["display_name"] == "user3" and third["real_name"] == "User 3"
    assert third["profile"]["image_72"].startswith("https://")
    assert third["tz"] and isinstance(third["tz_offset"], int) and third["tz_label"]
    bot = members[ws["bot"]["id"]]
    assert bot["is_bot"] and bot["profile"]["bot_id"] == ws["bot"]["bot_id"]
    assert "email" not in bot["profile"]
    assert all(m["locale"] == "en-US"
               for m in client.users_list(include_locale=True)["members"])


def test_users_list_pages_with_a_cursor(cluster, ws):
    client = web(cluster, ws["users"][0]["token"])
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        reply = client.users_list(limit=1, cursor=cursor)
        assert len(reply["members"]) == 1
        seen += [m["id"] for m in reply["members"]]
        cursor = reply["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted([u["id"] for u in ws["users"]] + [ws["bot"]["id"]])
    assert len(seen) == len(set(seen))


def test_users_list_bad_inputs(cluster, ws, other):
    token = ws["users"][0]["token"]
    client = web(cluster, token)
    assert error_of(lambda: client.users_list(cursor="bm9wZQ==")) == "invalid_cursor"
    assert error_of(lambda: client.users_list(cursor="***")) == "invalid_cursor"
    assert error_of(lambda: client.users_list(team_id=other["team"]["id"])) \
        == "team_access_not_granted"
    assert raw(cluster, "users.list", token, limit="many")["error"] == "invalid_arguments"
    assert raw(cluster, "users.list", token, limit=[1])["error"] == "invalid_arguments"


def test_users_info(cluster, ws, other):
    client = web(cluster, ws["users"][1]["token"])
    user = client.users_info(user=ws["users"][2]["id"])["user"]
    assert user["id"] == ws["users"][2]["id"] and USER_KEYS <= set(user)
    assert client.users_info(user=ws["users"][2]["id"], include_locale=True)["user"][
        "locale"] == "en-US"
    assert client.users_info(user=ws["bot"]["id"])["user"]["is_bot"] is True
    for bad in (other["users"][0]["id"], "UNOBODY123", "nobody"):
        assert error_of(lambda bad=bad: client.users_info(user=bad)) == "user_not_found"
    token = ws["users"][1]["token"]
    assert raw(cluster, "users.info", token)["error"] == "user_not_found"
    assert raw(cluster, "users.info", token, user=7)["error"] == "user_not_found"


def test_users_lookup_by_email(cluster, ws, other):
    client = web(cluster, ws["users"][1]["token"])
    found = client.users_lookupByEmail(email="user3@demo.example")["user"]
    assert found["id"] == ws["users"][2]["id"]
    assert client.users_lookupByEmail(email="USER3@Demo.Example")["user"]["id"] == found["id"]
    # the other workspace's admin moves its email: ours cannot find it
    web(cluster, other["users"][0]["token"]).users_profile_set(
        profile={"email": "elsewhere@other.example"})
    assert error_of(lambda: client.users_lookupByEmail(email="elsewhere@other.example")) \
        == "users_not_found"
    assert error_of(lambda: client.users_lookupByEmail(email="nobody@demo.example")) \
        == "users_not_found"
    token = ws["users"][1]["token"]
    assert raw(cluster, "users.lookupByEmail", token)["error"] == "invalid_arguments"
    assert raw(cluster, "users.lookupByEmail", token, email=["a"])["error"] \
        == "invalid_arguments"


# --- users.profile.get / users.profile.set ---------------------------------------------------


def test_profile_get(cluster, ws, other):
    client = web(cluster, ws["users"][1]["token"])
    mine = client.users_profile_get()["profile"]
    assert PROFILE_KEYS <= set(mine) and mine["email"] == "user2@demo.example"
    theirs = client.users_profile_get(user=ws["users"][2]["id"], include_labels=True)
    assert theirs["profile"]["display_name"] == "user3"
    for bad in (other["users"][0]["id"], "nobody"):
        assert error_of(lambda bad=bad: client.users_profile_get(user=bad)) == "user_not_found"


def test_profile_set_changes_the_profile_and_announces_it(cluster, ws):
    user = ws["users"][1]
    client = web(cluster, user["token"])
    before = len(events(cluster, ws["team"]["id"]))
    profile = client.users_profile_set(profile={
        "display_name": "Zoë", "real_name": "Zoë Example", "title": "Tester",
        "status_text": "testing", "status_emoji": ":test_tube:", "skype": "ignored",
    })["profile"]
    assert profile["display_name"] == "Zoë" and profile["display_name_normalized"] == "Zoe"
    assert profile["real_name"] == "Zoë Example" and profile["title"] == "Tester"
    assert profile["status_text"] == "testing" and profile["status_emoji"] == ":test_tube:"
    # one field by name and value, as a form sends it
    reply = client.api_call("users.profile.set", data={"name": "phone", "value": "555-0100"})
    assert reply["profile"]["phone"] == "555-0100"
    info = client.users_info(user=user["id"])["user"]
    assert info["real_name"] == "Zoë Example" and info["profile"]["phone"] == "555-0100"
    changes = [e["event"] for e in events(cluster, ws["team"]["id"])[before:]]
    assert [e["type"] for e in changes] == ["user_change", "user_change"]
    assert changes[-1]["user"]["id"] == user["id"]
    assert changes[-1]["user"]["profile"]["phone"] == "555-0100"
    assert changes[-1]["user"]["profile"]["title"] == "Tester"
    # an expiration in the past reads as a cleared status
    past = client.users_profile_set(profile={"status_text": "gone", "status_emoji": ":x:",
                                             "status_expiration": 1})["profile"]
    assert past["status_text"] == "" and past["status_emoji"] == ""
    assert past["status_expiration"] == 0


def test_profile_set_refusals_change_nothing(cluster, ws, other):
    member, target = ws["users"][2], ws["users"][1]
    client = web(cluster, member["token"])
    team = ws["team"]["id"]
    snapshot = {u["id"]: client.users_info(user=u["id"])["user"] for u in ws["users"]}
    heads = len(events(cluster, team))
    cases = [
        ({"profile": "{not json"}, "invalid_profile"),
        ({"profile": "[1, 2]"}, "invalid_profile"),
        ({"profile": {"title": {"nested": 1}}}, "invalid_profile"),
        ({"profile": {f"k{i}": "v" for i in range(51)}}, "invalid_profile"),
        ({}, "invalid_profile"),
        ({"profile": {"status_text": "x" * 101}}, "too_long"),
        ({"profile": {"display_name": "x" * 81}}, "too_long"),
        ({"profile": {"status_emoji": "smile"}}, "invalid_emoji_not_allowed"),
        ({"profile": {"display_name": "@me"}}, "invalid_starts_with_at"),
        ({"profile": {"real_name": "see https://spam.example"}}, "name_not_allowed"),
        ({"profile": {"status_expiration": "soon"}}, "invalid_profile"),
        ({"profile": {"email": "me@elsewhere.example"}}, "not_admin"),
        ({"user": target["id"], "profile": {"title": "Boss"}}, "not_admin"),
        ({"user": other["users"][0]["id"], "profile": {"title": "x"}}, "user_not_found"),
        ({"user": "nobody", "profile": {"title": "x"}}, "user_not_found"),
    ]
    for body, error in cases:
        assert raw(cluster, "users.profile.set", member["token"], **body)["error"] == error, body
    admin = web(cluster, ws["users"][0]["token"])
    assert error_of(lambda: admin.users_profile_set(
        user=target["id"], profile={"email": "user3@demo.example"})) == "email_taken"
    assert error_of(lambda: admin.users_profile_set(profile={"email": "not-an-email"})) \
        == "invalid_profile"
    bot = web(cluster, ws["bot"]["token"])
    assert error_of(lambda: bot.users_profile_set(profile={"title": "x"})) \
        == "not_allowed_token_type"
    after = {u["id"]: client.users_info(user=u["id"])["user"] for u in ws["users"]}
    assert after == snapshot
    assert len(events(cluster, team)) == heads


def test_admins_edit_others_and_only_owners_edit_admins(cluster):
    ws = cluster.seed(3)
    owner, member, deputy = ws["users"]
    owner_client = web(cluster, owner["token"])
    changed = owner_client.users_profile_set(user=member["id"], profile={
        "title": "Set by the owner", "email": "Member@New.Example"})["profile"]
    assert changed["title"] == "Set by the owner" and changed["email"] == "member@new.example"
    # the owner edits the bot; a plain admin edits neither admins nor bots
    assert owner_client.users_profile_set(user=ws["bot"]["id"], profile={
        "title": "Bot"})["profile"]["title"] == "Bot"
    with directory_db(cluster) as cur:  # no API makes admins yet
        cur.execute("UPDATE users SET is_admin=1 WHERE id=%s", (deputy["id"],))
    deputy_client = web(cluster, deputy["token"])
    assert deputy_client.users_info(user=deputy["id"])["user"]["is_admin"] is True
    assert error_of(lambda: deputy_client.users_profile_set(
        user=owner["id"], profile={"title": "x"})) == "cannot_update_admin_user"
    assert error_of(lambda: deputy_client.users_profile_set(
        user=ws["bot"]["id"], profile={"title": "x"})) == "not_app_admin"
    assert deputy_client.users_profile_set(user=member["id"], profile={
        "title": "Set by an admin"})["profile"]["title"] == "Set by an admin"
    assert web(cluster, owner["token"]).users_info(user=owner["id"])["user"]["profile"][
        "title"] == ""


# --- users.prefs.* ---------------------------------------------------------------------------


def test_prefs_get_and_set(cluster, ws):
    me, them = ws["users"][0], ws["users"][1]
    client = web(cluster, me["token"])
    prefs = client.api_call("users.prefs.get")["prefs"]
    assert prefs["time24"] is False and prefs["highlight_words"] == ""
    before = len(events(cluster, me["id"]))
    reply = client.api_call("users.prefs.set", data={"name": "time24", "value": "true"})
    assert reply["prefs"]["time24"] is True
    reply = client.api_call("users.prefs.set", json={"prefs": {
        "highlight_words": "deploy,outage", "sidebar_width": 240}})
    assert reply["prefs"]["highlight_words"] == "deploy,outage"
    prefs = client.api_call("users.prefs.get")["prefs"]
    assert prefs["time24"] is True and prefs["sidebar_width"] == 240
    changes = [e["event"] for e in events(cluster, me["id"])[before:]]
    assert [(e["type"], e["name"], e["value"]) for e in changes] == [
        ("pref_change", "time24", True), ("pref_change", "highlight_words", "deploy,outage"),
        ("pref_change", "sidebar_width", 240)]
    # another user's prefs are untouched
    assert web(cluster, them["token"]).api_call("users.prefs.get")["prefs"]["time24"] is False


def test_prefs_set_refusals_change_nothing(cluster, ws):
    me = ws["users"][2]
    token = me["token"]
    before = raw(cluster, "users.prefs.get", token)["prefs"]
    heads = len(events(cluster, me["id"]))
    cases = [
        ({}, "invalid_name"),
        ({"name": "Not A Name", "value": "x"}, "invalid_name"),
        ({"name": "time24", "value": "maybe"}, "invalid_value"),
        ({"name": "display_real_names_override", "value": "x"}, "invalid_value"),
        ({"name": "custom", "value": {"nested": True}}, "invalid_value"),
        ({"prefs": "{broken"}, "invalid_prefs"),
        ({"prefs": "[1]"}, "invalid_prefs"),
        ({"prefs": {}}, "invalid_prefs"),
        ({"prefs": {"time24": True, "bad name": 1}}, "invalid_name"),
    ]
    for body, error in cases:
        assert raw(cluster, "users.prefs.set", token, **body)["error"] == error, body
    assert raw(cluster, "users.prefs.get", token)["prefs"] == before
    assert len(events(cluster, me["id"])) == heads


# --- users.setPresence -----------------------------------------------------------------------


async def test_set_presence_away_is_manual_and_reaches_own_sockets(cluster):
    ws = cluster.seed(2)
    me, watcher = ws["users"]
    mine, theirs = web(cluster, me["token"]), web(cluster, watcher["token"])

    async def presence() -> dict[str, Any]:
        return await trio.to_thread.run_sync(lambda: theirs.users_getPresence(user=me["id"]))

    async with rtm_session(cluster, me["token"]) as rtm:
        with trio.fail_after(10):
            while (await presence())["presence"] != "active":
                await trio.sleep(0.05)
        await trio.to_thread.run_sync(lambda: mine.users_setPresence(presence="away"))
        event = await rtm.next({"type": "manual_presence_change"})
        assert event["presence"] == "away"
        state = await presence()
        assert state["presence"] == "away" and state["manual_away"] is True
        assert state["online"] is True
        await trio.to_thread.run_sync(lambda: mine.users_setPresence(presence="auto"))
        event = await rtm.next({"type": "manual_presence_change"})
        assert event["presence"] == "active"
        state = await presence()
        assert state["presence"] == "active" and state["manual_away"] is False
    assert "manual_presence_change" not in kinds(cluster, watcher["id"])


def test_set_presence_bad_inputs(cluster, ws):
    token = ws["users"][1]["token"]
    heads = len(events(cluster, ws["users"][1]["id"]))
    for body in ({}, {"presence": "busy"}, {"presence": 7}, {"presence": ["away"]}):
        assert raw(cluster, "users.setPresence", token, **body)["error"] \
            == "invalid_presence", body
    assert raw(cluster, "users.getPresence", token)["manual_away"] is False
    assert len(events(cluster, ws["users"][1]["id"])) == heads


# --- user_change on the RTM stream ------------------------------------------------------------


async def test_user_change_reaches_the_workspace_and_no_other(cluster):
    ws, other = cluster.seed(2), cluster.seed(1)
    changer, peer = ws["users"]
    outsider = other["users"][0]
    async with rtm_session(cluster, changer["token"]) as a, rtm_session(
        cluster, peer["token"]
    ) as b, rtm_session(cluster, outsider["token"]) as c:
        await trio.to_thread.run_sync(lambda: web(cluster, changer["token"]).users_profile_set(
            profile={"status_text": "on call", "status_emoji": ":pager:"}))
        for rtm in (a, b):
            event = await rtm.next({"type": "user_change"})
            assert event["user"]["id"] == changer["id"]
            assert event["user"]["profile"]["status_text"] == "on call"
        # the outsider's own workspace speaks next: nothing of ours came before it
        await trio.to_thread.run_sync(lambda: web(cluster, outsider["token"]).users_profile_set(
            profile={"title": "marker"}))
        event = await c.next({"type": "user_change"})
        assert event["user"]["id"] == outsider["id"]
        assert not [e for e in c.seen if json.dumps(e).find(changer["id"]) >= 0]
