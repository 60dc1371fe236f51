"""rtm.start's snapshot of the workspace as the caller sees it: itself, the workspace, every
user and bot, its conversations and the usergroups. Built from the same reads as
conversations.list, users.list and usergroups.list, a page at a time: for a 5,000-user
workspace that is a handful of queries, none per user or per channel."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cluster import ids
from webapp import store
from webapp.actions import channels, dnd, usergroups
from webapp.actions import users as user_actions
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack.shapes import bot_shape, team_shape, user_shape
from webapp.store import directory

ALL_TYPES = ("public_channel", "private_channel", "mpim", "im")
CONVERSATION_PAGE = 1000
USER_PAGE = 5000


async def _conversations(rt: Runtime, who: store.Identity) -> list[dict[str, Any]]:
    """Every conversation conversations.list would page through, archived included."""
    out: list[dict[str, Any]] = []
    after: str | None = ""
    while after is not None:
        page, after = await channels.list_conversations(rt, who, ALL_TYPES, False, after,
                                                        CONVERSATION_PAGE)
        out += page
    return out


async def _user_rows(rt: Runtime, team_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        page = await directory.list_users(rt.db, team_id, rows[-1]["id"] if rows else "",
                                          USER_PAGE)
        rows += page
        if len(page) < USER_PAGE:
            return rows


def _sorted_conversations(shapes: list[dict[str, Any]], mpim_aware: bool
                          ) -> dict[str, list[dict[str, Any]]]:
    """Slack's four lists: public channels (each with is_member), the caller's private
    channels, its DMs, and its group DMs, which a client that is not ``mpim_aware`` finds
    among ``groups`` as Slack gave them before MPIMs had a list of their own."""
    out: dict[str, list[dict[str, Any]]] = {"channels": [], "groups": [], "ims": [],
                                            "mpims": []}
    for shape in shapes:
        if shape["is_im"]:
            out["ims"].append(shape)
        elif shape["is_mpim"]:
            out["mpims" if mpim_aware else "groups"].append(shape)
        elif shape["is_private"]:
            out["groups"].append(shape)
        else:
            out["channels"].append(shape)
    return out


async def snapshot(rt: Runtime, who: store.Identity, *, mpim_aware: bool,
                   locale: bool) -> dict[str, Any]:
    conversations, rows, team, prefs, away, groups, dnd_status = await asyncio.gather(
        _conversations(rt, who), _user_rows(rt, who.team_id),
        directory.get_team(rt.db, who.team_id), user_actions.all_prefs(rt, who),
        directory.manual_away(rt.db, who.team_id, who.user_id),
        usergroups.listing(rt, who, True, True, False), dnd.own_status(rt, who))
    me = next((r for r in rows if r["id"] == who.user_id), None)
    if team is None or me is None:
        raise ApiError("invalid_auth")  # the caller vanished since it was authenticated
    mine = [g["id"] for g in groups if who.user_id in g["users"]]
    return {
        "self": {"id": who.user_id, "name": who.user_name, "prefs": prefs,
                 "created": me["created"], "manual_presence": "away" if away else "active"},
        "team": team_shape(team),
        "users": [user_shape(r, locale=locale) for r in rows],
        "bots": [bot_shape(r) for r in rows if r["is_bot"]],
        **_sorted_conversations(conversations, mpim_aware),
        "subteams": {"self": mine,
                     "all": [{k: v for k, v in g.items() if k != "users"} for g in groups]},
        "dnd": dnd_status,
        "cache_ts": int(time.time()),
        "latest_event_ts": ids.format_ts(ids.now_us()),
        "read_only_channels": [], "non_threadable_channels": [], "thread_only_channels": [],
        "can_manage_shared_channels": False, "is_europe": False,
    }
