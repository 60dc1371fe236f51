"""Rate limits as Slack answers them: HTTP 429, `Retry-After`, error `ratelimited`, and the
refused call writes nothing."""

from __future__ import annotations

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.conftest import private_cluster

LIMIT = 5


@pytest.fixture
def limited_cluster(tmp_path):
    with private_cluster(tmp_path, channels=1, gateways=1, rate_limit_per_minute=LIMIT) as c:
        yield c


def test_post_over_the_limit_is_429_with_retry_after(limited_cluster):
    c = limited_cluster
    ws = c.seed(2)
    general = ws["channels"][0]["id"]
    client = WebClient(token=ws["users"][0]["token"], base_url=c.api)
    stamps = [client.chat_postMessage(channel=general, text=f"n{i}")["ts"]
              for i in range(LIMIT)]
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel=general, text="one too many")
    response = refused.value.response
    assert response.status_code == 429
    assert response["error"] == "ratelimited" and response["ok"] is False
    # a burst of LIMIT, then one call per 60/LIMIT s: the wait is about that interval
    assert 1 <= int(response.headers["Retry-After"]) <= 60 // LIMIT + 1
    # the limit is per user and method: another user, and another method, still work
    other = WebClient(token=ws["users"][1]["token"], base_url=c.api)
    assert other.chat_postMessage(channel=general, text="other user")["ok"]
    history = client.conversations_history(channel=general, limit=50)
    texts = [m["text"] for m in history["messages"]]
    assert "one too many" not in texts
    assert set(stamps) <= {m["ts"] for m in history["messages"]}
    raw = httpx.post(c.api + "chat.postMessage", json={"channel": general, "text": "x"},
                     headers={"Authorization": f"Bearer {ws['users'][0]['token']}"})
    assert raw.status_code == 429 and raw.json() == {"ok": False, "error": "ratelimited"}
