"""dnd.*: setSnooze, endSnooze, endDnd, info, teamInfo through slack_sdk against the running
cluster; expiry (the stored end moved into the past, no waiting); dnd_updated on the user's
own sockets and dnd_updated_user on a teammate's; bad input answered with Slack's errors
and writing nothing; no other workspace's user revealed. The status computation is pure
and checked with hypothesis."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import rtm_session
from tests.test_api_users import directory_db, error_of, events, raw, web
from webapp.actions.dnd import MAX_SNOOZE_MINUTES, MAX_TEAM_INFO_USERS
from webapp.slack.shapes import NO_DND_TS, dnd_status

TEAM_KEYS = {"dnd_enabled", "next_dnd_start_ts", "next_dnd_end_ts"}
NO_DND = {"dnd_enabled": False, "next_dnd_start_ts": 1, "next_dnd_end_ts": 1}


def snooze_window(cluster: Any, user_id: str) -> tuple[int, int]:
    with directory_db(cluster) as cur:
        cur.execute("SELECT snooze_start, snooze_end FROM users WHERE id=%s", (user_id,))
        return cur.fetchone()


def expire(cluster: Any, user_id: str) -> None:
    """Move the user's snooze end into the past: what an hour of waiting would do."""
    with directory_db(cluster) as cur:
        cur.execute("UPDATE users SET snooze_start=snooze_start-7200, "
                    "snooze_end=UNIX_TIMESTAMP()-5 WHERE id=%s", (user_id,))


# --- the pure status ---------------------------------------------------------------------------

windows = st.tuples(st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40))


@given(windows)
def test_status_is_snoozing_exactly_while_the_end_lies_ahead(w: tuple[int, int, int]) -> None:
    start, end, now = w
    own = dnd_status(start, end, now, own=True)
    assert own["snooze_enabled"] is own["dnd_enabled"] is (end > now)
    if end > now:
        assert own["snooze_endtime"] == own["next_dnd_end_ts"] == end
        assert 0 < own["snooze_remaining"] == end - now
        assert own["next_dnd_start_ts"] == start
    else:
        assert own == {**NO_DND, "snooze_enabled": False}
        assert own["next_dnd_start_ts"] == own["next_dnd_end_ts"] == NO_DND_TS


@given(windows)
def test_teammates_see_the_window_but_no_snooze_field(w: tuple[int, int, int]) -> None:
    seen = dnd_status(*w, own=False)
    assert set(seen) == TEAM_KEYS
    assert seen == {k: v for k, v in dnd_status(*w, own=True).items() if k in TEAM_KEYS}


# --- round trip -------------------------------------------------------------------------------


def test_set_info_end_round_trip(cluster, ws):
    me, mate = ws["users"][0], ws["users"][1]
    mine, theirs = web(cluster, me["token"]), web(cluster, mate["token"])
    assert mine.dnd_info().data == {"ok": True, **NO_DND, "snooze_enabled": False}
    before = int(time.time())
    reply = mine.dnd_setSnooze(num_minutes=30).data
    after = int(time.time())
    assert set(reply) == {"ok", "snooze_enabled", "snooze_endtime", "snooze_remaining",
                          "snooze_is_indefinite"}
    assert reply["snooze_enabled"] is True and reply["snooze_is_indefinite"] is False
    assert before + 1800 <= reply["snooze_endtime"] <= after + 1800
    assert 1790 <= reply["snooze_remaining"] <= 1800
    info = mine.dnd_info().data
    assert info["dnd_enabled"] is True and info["snooze_enabled"] is True
    assert info["snooze_endtime"] == info["next_dnd_end_ts"] == reply["snooze_endtime"]
    assert before <= info["next_dnd_start_ts"] <= after
    # a teammate sees the window, not the snooze
    other_view = theirs.dnd_info(user=me["id"]).data
    assert set(other_view) == {"ok"} | TEAM_KEYS and other_view["dnd_enabled"] is True
    assert other_view["next_dnd_end_ts"] == reply["snooze_endtime"]
    team = theirs.dnd_teamInfo(users=f"{me['id']},{mate['id']}").data["users"]
    assert team == {me["id"]: {k: other_view[k] for k in TEAM_KEYS}, mate["id"]: NO_DND}
    # a second setSnooze changes the duration, the session keeps its start
    longer = mine.dnd_setSnooze(num_minutes="90").data
    assert longer["snooze_endtime"] >= reply["snooze_endtime"] + 3600
    assert mine.dnd_info()["next_dnd_start_ts"] == info["next_dnd_start_ts"]
    ended = mine.dnd_endSnooze().data
    assert ended == {"ok": True, **NO_DND, "snooze_enabled": False}
    assert mine.dnd_info().data == {"ok": True, **NO_DND, "snooze_enabled": False}
    assert error_of(mine.dnd_endSnooze) == "snooze_not_active"


def test_end_dnd_ends_a_snooze_and_is_ok_without_one(cluster, ws):
    me = ws["users"][2]
    mine = web(cluster, me["token"])
    heads = len(events(cluster, me["id"]))
    assert mine.dnd_endDnd().data == {"ok": True}
    assert len(events(cluster, me["id"])) == heads  # nothing ended, nothing said
    mine.dnd_setSnooze(num_minutes=5)
    assert mine.dnd_endDnd().data == {"ok": True}
    assert mine.dnd_info()["snooze_enabled"] is False
    assert error_of(mine.dnd_endSnooze) == "snooze_not_active"


def test_snooze_expires_without_anyone_ending_it(cluster):
    ws = cluster.seed(2)
    me, mate = ws["users"]
    mine = web(cluster, me["token"])
    first = mine.dnd_setSnooze(num_minutes=60).data
    expire(cluster, me["id"])
    assert mine.dnd_info().data == {"ok": True, **NO_DND, "snooze_enabled": False}
    assert web(cluster, mate["token"]).dnd_teamInfo(users=me["id"])["users"] == {
        me["id"]: NO_DND}
    assert error_of(mine.dnd_endSnooze) == "snooze_not_active"
    # an expired session is not extended: a new snooze starts now
    second = mine.dnd_setSnooze(num_minutes=1).data
    assert 50 <= second["snooze_remaining"] <= 60
    start, end = snooze_window(cluster, me["id"])
    assert end == second["snooze_endtime"] and start >= first["snooze_endtime"] - 3600


def test_rtm_start_carries_the_callers_dnd(cluster):
    ws = cluster.seed(1)
    me = ws["users"][0]
    mine = web(cluster, me["token"])
    assert mine.rtm_start()["dnd"] == {**NO_DND, "snooze_enabled": False}
    end = mine.dnd_setSnooze(num_minutes=10)["snooze_endtime"]
    dnd = mine.rtm_start()["dnd"]
    assert dnd["snooze_enabled"] is True and dnd["snooze_endtime"] == end


def test_a_bot_reads_dnd_but_cannot_snooze(cluster, ws):
    bot = web(cluster, ws["bot"]["token"])
    for call in (lambda: bot.dnd_setSnooze(num_minutes=5), bot.dnd_endSnooze, bot.dnd_endDnd):
        assert error_of(call) == "not_allowed_token_type"
    assert bot.dnd_info(user=ws["users"][0]["id"])["ok"] is True
    assert set(bot.dnd_info().data) == {"ok", "snooze_enabled"} | TEAM_KEYS


async def seen_or_next(rtm: Any, match: dict[str, Any]) -> dict[str, Any]:
    """``match`` from what the session already read (streams interleave freely), or next."""
    for event in rtm.seen:
        if all(event.get(k) == v for k, v in match.items()):
            return event
    return await rtm.next(match)


# --- events -----------------------------------------------------------------------------------


async def test_dnd_updated_to_own_sockets_dnd_updated_user_to_the_workspace(cluster):
    ws, outsider_ws = cluster.seed(2), cluster.seed(1)
    me, mate = ws["users"]
    outsider = outsider_ws["users"][0]
    mine = web(cluster, me["token"])
    async with rtm_session(cluster, me["token"]) as a, rtm_session(
        cluster, mate["token"]
    ) as b, rtm_session(cluster, outsider["token"]) as c:
        reply = await trio.to_thread.run_sync(lambda: mine.dnd_setSnooze(num_minutes=15))
        own = await a.next({"type": "dnd_updated"})
        assert own["user"] == me["id"]
        assert own["dnd_status"]["snooze_enabled"] is True
        assert own["dnd_status"]["snooze_endtime"] == reply["snooze_endtime"]
        assert own["dnd_status"]["dnd_enabled"] is True
        seen = await b.next({"type": "dnd_updated_user"})
        assert seen["user"] == me["id"] and set(seen["dnd_status"]) == TEAM_KEYS
        assert seen["dnd_status"]["next_dnd_end_ts"] == reply["snooze_endtime"]
        # the caller hears the workspace's event too; the teammate never the personal one
        await seen_or_next(a, {"type": "dnd_updated_user", "user": me["id"]})
        await trio.to_thread.run_sync(mine.dnd_endSnooze)
        ended = await a.next({"type": "dnd_updated"})
        assert ended["dnd_status"] == {**NO_DND, "snooze_enabled": False}
        assert (await b.next({"type": "dnd_updated_user"}))["dnd_status"] == NO_DND
        assert not [e for e in b.seen if e.get("type") == "dnd_updated"]
        assert not [e for e in events(cluster, mate["id"])
                    if e["event"]["type"].startswith("dnd_")]
        # the outsider's workspace speaks next: nothing of ours came before it
        await trio.to_thread.run_sync(
            lambda: web(cluster, outsider["token"]).dnd_setSnooze(num_minutes=1))
        await c.next({"type": "dnd_updated_user", "user": outsider["id"]})
        assert not [e for e in c.seen if me["id"] in json.dumps(e)]


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("body, error", [
    ({}, "missing_duration"),
    ({"num_minutes": ""}, "missing_duration"),
    ({"num_minutes": 0}, "invalid_arguments"),
    ({"num_minutes": "0"}, "invalid_arguments"),
    ({"num_minutes": -5}, "invalid_arguments"),
    ({"num_minutes": "-5"}, "invalid_arguments"),
    ({"num_minutes": MAX_SNOOZE_MINUTES + 1}, "invalid_arguments"),
    ({"num_minutes": 10**30}, "invalid_arguments"),
    ({"num_minutes": "9" * 40}, "invalid_arguments"),
    ({"num_minutes": "ten"}, "invalid_arguments"),
    ({"num_minutes": 1.5}, "invalid_arguments"),
    ({"num_minutes": "1.5"}, "invalid_arguments"),
    ({"num_minutes": True}, "invalid_arguments"),
    ({"num_minutes": [5]}, "invalid_arguments"),
    ({"num_minutes": {"n": 5}}, "invalid_arguments"),
    ({"num_minutes": None}, "missing_duration"),
])
def test_set_snooze_refuses_bad_minutes_and_writes_nothing(cluster, ws, body, error):
    me = ws["users"][1]
    heads = len(events(cluster, me["id"]))
    window = snooze_window(cluster, me["id"])
    assert raw(cluster, "dnd.setSnooze", me["token"], **body) == {"ok": False,
                                                                  "error": error}
    assert snooze_window(cluster, me["id"]) == window
    assert len(events(cluster, me["id"])) == heads


def test_set_snooze_takes_the_cap_and_form_strings(cluster):
    me = cluster.seed(1)["users"][0]
    reply = raw(cluster, "dnd.setSnooze", me["token"], num_minutes=MAX_SNOOZE_MINUTES)
    assert reply["ok"] and reply["snooze_remaining"] > MAX_SNOOZE_MINUTES * 60 - 10
    assert web(cluster, me["token"]).api_call(
        "dnd.setSnooze", params={"num_minutes": " 2 "})["snooze_remaining"] <= 120


def test_info_and_team_info_refuse_unknown_and_foreign_users(cluster, ws, other):
    token = ws["users"][0]["token"]
    foreign = other["users"][0]
    web(cluster, foreign["token"]).dnd_setSnooze(num_minutes=20)
    for user in (foreign["id"], "UNOSUCHUSER", "not-an-id", 42, ["U1"], {"a": 1}):
        assert raw(cluster, "dnd.info", token, user=user) == {"ok": False,
                                                             "error": "user_not_found"}
    mate = ws["users"][1]["id"]
    reply = raw(cluster, "dnd.teamInfo", token, users=f"{mate},{foreign['id']},UNOSUCHUSER")
    assert reply == {"ok": True, "users": {mate: reply["users"][mate]}}
    assert foreign["id"] not in json.dumps(reply)
    assert raw(cluster, "dnd.teamInfo", token, users=[mate])["users"].keys() == {mate}


@pytest.mark.parametrize("users, error", [
    (None, "invalid_arguments"),
    ("", "invalid_arguments"),
    (" , ,", "invalid_arguments"),
    ("U1,not an id", "user_not_found"),
    (7, "invalid_arguments"),
    ([1, 2], "invalid_arguments"),
    ({"U1": 1}, "invalid_arguments"),
    (",".join(f"U{i:04d}AB" for i in range(MAX_TEAM_INFO_USERS + 1)), "too_many_users"),
    ("U1," * 100_000, "user_not_found"),
])
def test_team_info_refuses_bad_user_lists(cluster, ws, users, error):
    body = {} if users is None else {"users": users}
    assert raw(cluster, "dnd.teamInfo", ws["users"][0]["token"], **body) == {
        "ok": False, "error": error}


def test_team_info_takes_the_maximum_list(cluster, ws):
    ids = [u["id"] for u in ws["users"]] + [f"U{i:04d}XY" for i in range(
        MAX_TEAM_INFO_USERS - len(ws["users"]))]
    reply = raw(cluster, "dnd.teamInfo", ws["users"][0]["token"], users=",".join(ids))
    assert reply["ok"] and set(reply["users"]) == {u["id"] for u in ws["users"]}


@pytest.mark.parametrize("name", ["dnd.setSnooze", "dnd.endSnooze", "dnd.endDnd", "dnd.info",
                                  "dnd.teamInfo"])
def test_every_dnd_method_wants_a_real_token(cluster, name):
    body = {"num_minutes": 5, "users": "U1"}
    for token, error in ((None, "not_authed"), ("xoxp-not-a-token", "invalid_auth")):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = httpx.post(cluster.api + name, json=body, headers=headers, timeout=10)
        assert resp.json() == {"ok": False, "error": error}


async def test_racing_calls_leave_one_state_and_one_event_per_change(cluster):
    """Concurrent setSnooze and endSnooze of one user: each either changes the state (and
    says so exactly once on each stream) or is refused whole; dnd.info ends up agreeing
    with the row."""
    ws = cluster.seed(1)
    me = ws["users"][0]
    replies: list[dict[str, Any]] = []

    async def call(http: httpx.AsyncClient, i: int) -> None:
        name, body = ("dnd.setSnooze", {"num_minutes": 1 + i}) if i % 3 else (
            "dnd.endSnooze", {})
        resp = await http.post(cluster.api + name, json=body,
                               headers={"Authorization": f"Bearer {me['token']}"})
        replies.append(resp.json())

    async with httpx.AsyncClient(timeout=30) as http, trio.open_nursery() as nursery:
        for i in range(24):
            nursery.start_soon(call, http, i)
    assert all(r["ok"] or r["error"] == "snooze_not_active" for r in replies), replies
    changes = sum(r["ok"] for r in replies)
    mine = [e["event"] for e in events(cluster, me["id"])
            if e["event"]["type"] == "dnd_updated"]
    team = [e["event"] for e in events(cluster, ws["team"]["id"])
            if e["event"]["type"] == "dnd_updated_user" and e["event"]["user"] == me["id"]]
    assert len(mine) == len(team) == changes
    start, end = snooze_window(cluster, me["id"])
    info = web(cluster, me["token"]).dnd_info().data
    assert info["snooze_enabled"] is (end > time.time())
    if info["snooze_enabled"]:
        assert info["snooze_endtime"] == end and info["next_dnd_start_ts"] == start
