"""auth.revoke and team.profile.get through slack_sdk: a revoked token answers invalid_auth
at once, on every webapp process (each caches identities for 30 s), for every method
including rtm.connect; test mode and refused calls revoke nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
from slack_sdk import WebClient

from ops import cluster as ops_cluster
from tests.conftest import start_cluster, stop_cluster
from tests.test_api_users import error_of, raw, web


def _refused_everywhere(base: str, token: str, channel: str) -> None:
    """Every kind of call with ``token`` through the webapp at ``base`` is invalid_auth."""
    client = WebClient(token=token, base_url=base)
    assert error_of(client.auth_test) == "invalid_auth"
    assert error_of(client.rtm_connect) == "invalid_auth"
    assert error_of(lambda: client.chat_postMessage(channel=channel, text="after")) \
        == "invalid_auth"
    assert error_of(client.users_list) == "invalid_auth"
    assert error_of(client.auth_revoke) == "invalid_auth"


def test_revoke_test_mode_revokes_nothing(cluster, ws):
    client = web(cluster, ws["users"][1]["token"])
    assert client.auth_revoke(test=True)["revoked"] is False
    assert client.auth_test()["user_id"] == ws["users"][1]["id"]
    assert raw(cluster, "auth.revoke", ws["users"][1]["token"], test="perhaps")["error"] \
        == "invalid_arguments"
    assert raw(cluster, "auth.revoke", ws["users"][1]["token"], test=[1])["error"] \
        == "invalid_arguments"
    assert client.auth_test()["user_id"] == ws["users"][1]["id"]


def test_revoke_without_a_valid_token(cluster, ws):
    assert httpx.post(cluster.api + "auth.revoke", timeout=10).json()["error"] == "not_authed"
    assert raw(cluster, "auth.revoke", "xoxp-not-a-token")["error"] == "invalid_auth"
    assert web(cluster, ws["users"][2]["token"]).auth_test()["ok"]


def test_revoked_token_fails_at_once(cluster, ws, other):
    alice, bob = ws["users"][0], ws["users"][1]
    client = web(cluster, alice["token"])
    channel = ws["channels"][0]["id"]
    # warm this webapp's identity cache with the token first
    assert client.auth_test()["user_id"] == alice["id"]
    client.chat_postMessage(channel=channel, text="before")
    assert client.auth_revoke().data == {"ok": True, "revoked": True}
    _refused_everywhere(cluster.api, alice["token"], channel)
    # the same user's workspace and everyone else's tokens are untouched
    assert web(cluster, bob["token"]).auth_test()["user_id"] == bob["id"]
    assert web(cluster, other["users"][0]["token"]).auth_test()["ok"]
    history = web(cluster, bob["token"]).conversations_history(channel=channel)["messages"]
    assert "after" not in [m["text"] for m in history]


def test_revoke_reaches_every_webapp_process(tmp_path: Path):
    """Two webapps, both holding the token in their identity cache: after a revoke through
    one, the other refuses it on the very next call."""
    c = start_cluster(tmp_path, ops_cluster.Counts(webapps=2, channels=1, gateways=1))
    try:
        ws = c.seed(2)
        token, channel = ws["users"][0]["token"], ws["channels"][0]["id"]
        bases = [p["webapp_url"] for p in c.processes("webapp")]
        assert len(set(bases)) == 2
        for base in bases:
            assert WebClient(token=token, base_url=base).auth_test()["ok"]
        assert WebClient(token=token, base_url=bases[0]).auth_revoke()["revoked"] is True
        for base in reversed(bases):
            _refused_everywhere(base, token, channel)
        assert WebClient(token=ws["users"][1]["token"], base_url=bases[1]).auth_test()["ok"]
    finally:
        stop_cluster(c)


# --- team.profile.get ----------------------------------------------------------------------------


def test_team_profile_get_is_empty(cluster, ws, other):
    token = ws["users"][2]["token"]
    client = web(cluster, token)
    empty = {"fields": [], "sections": []}
    assert client.team_profile_get()["profile"] == empty
    for visibility in ("all", "visible", "hidden"):
        assert client.team_profile_get(visibility=visibility)["profile"] == empty
    assert raw(cluster, "team.profile.get", token, visibility="secret")["error"] \
        == "invalid_arguments"
    assert raw(cluster, "team.profile.get", token, visibility=["all"])["error"] \
        == "invalid_arguments"
    assert raw(cluster, "team.profile.get", token, team_id=other["team"]["id"])["error"] \
        == "team_access_not_granted"
    assert httpx.post(cluster.api + "team.profile.get", timeout=10).json()["error"] \
        == "not_authed"
