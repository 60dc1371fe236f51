"""Every registered method against wrong-typed, oversized and hostile arguments: the answer is
always a Slack-shaped JSON reply with HTTP 200 (429 only for ratelimited), never a traceback,
a 5xx or ``internal_error``. The method list comes from the registry, so a method added later
is covered without touching this file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Cluster
from webapp import api

BAD_VALUES: list[Any] = [
    [], {}, {"a": [1, {"b": None}]}, 12345678901234567890, -1, 1.5, True,
    "x" * 70_000, "' OR 1=1; --", "\u0000", "#", "C", "U" + "Z" * 40, "1e9999", "null",
]


@pytest.fixture(scope="module")
def setup(cluster: Cluster) -> Iterator[tuple[Cluster, dict[str, Any], httpx.Client]]:
    ws = cluster.seed(2)
    with httpx.Client(timeout=30) as http:
        yield cluster, ws, http


def _check(resp: httpx.Response, where: str) -> None:
    assert resp.status_code in (200, 429), (where, resp.status_code, resp.text[:200])
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("ok"), bool), (where, body)
    if not body["ok"]:
        assert body["error"] != "internal_error", where
        assert (resp.status_code == 429) == (body["error"] == "ratelimited"), where


def _methods() -> list[str]:
    return sorted(api.load())


@pytest.mark.parametrize("name", _methods())
def test_every_argument_survives_hostile_values(setup: Any, name: str) -> None:
    cluster, ws, http = setup
    method = api.load()[name]
    token = ws["users"][1]["token"]  # not #general's creator, not an admin
    general = ws["channels"][0]["id"]
    base = {"channel": general, "text": "fuzz", "user": ws["users"][0]["id"]}
    for arg in list(method.args) or ["anything"]:
        for value in BAD_VALUES:
            body = {**{k: v for k, v in base.items() if k in method.args}, arg: value}
            resp = http.post(cluster.api + name, json=body,
                             headers={"Authorization": f"Bearer {token}"})
            _check(resp, f"{name} {arg}={str(value)[:40]!r} (json)")
        form = {arg: "x" * 70_000}
        resp = http.post(cluster.api + name, data=form,
                         headers={"Authorization": f"Bearer {token}"})
        _check(resp, f"{name} {arg} (form)")


@pytest.mark.parametrize("name", _methods())
def test_every_method_refuses_a_missing_or_bad_token(setup: Any, name: str) -> None:
    cluster, _, http = setup
    method = api.load()[name]
    if not method.auth:
        return
    for headers, error in (({}, "not_authed"),
                           ({"Authorization": "Bearer xoxp-not-a-token"}, "invalid_auth")):
        resp = http.post(cluster.api + name, json={}, headers=headers)
        assert resp.status_code == 200
        assert resp.json() == {"ok": False, "error": error}, name
