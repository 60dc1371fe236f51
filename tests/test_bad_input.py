"""Bad input on the Slack Web API: every case gets the exact Slack-style error, writes nothing
(message history and event logs unchanged) and leaves the webapp healthy."""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import api_call

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclasses.dataclass
class Ctx:
    cluster: Any
    a: dict[str, Any]  # user A: member of everything below
    b: dict[str, Any]  # user B: in #general only
    general: str
    pub: str  # public channel made by A; B is not a member
    pub_name: str
    priv: str  # private channel made by A
    other: dict[str, Any]  # a second workspace
    http: httpx.Client

    @property
    def streams(self) -> list[str]:
        return [self.general, self.pub, self.priv, self.a["id"], self.b["id"],
                self.other["channels"][0]["id"], self.other["users"][0]["id"]]

    @property
    def channels(self) -> list[str]:
        return [self.general, self.pub, self.priv]


def _ok(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert resp.status_code == 200 and body["ok"] is True, body
    return body


@pytest.fixture(scope="module")
def ctx(cluster: Any) -> Iterator[Ctx]:
    ws = cluster.seed(3)
    other = cluster.seed(1)
    a, b = ws["users"][0], ws["users"][1]
    pub_name = "pub-" + secrets.token_hex(4)
    pub = _ok(api_call(cluster, "conversations.create", a["token"], name=pub_name))
    priv = _ok(api_call(cluster, "conversations.create", a["token"],
                        name="priv-" + secrets.token_hex(4), is_private=True))
    _ok(api_call(cluster, "chat.postMessage", a["token"], channel=ws["channels"][0]["id"],
                 text="seed message"))
    with httpx.Client(timeout=10) as http:
        yield Ctx(cluster, a, b, ws["channels"][0]["id"], pub["channel"]["id"], pub_name,
                  priv["channel"]["id"], other, http)


def call(c: Ctx, method: str, token: str | None, **body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return c.http.post(c.cluster.api + method, json=body, headers=headers)


def events(c: Ctx, stream: str) -> list[dict[str, Any]]:
    resp = c.http.get(c.cluster.root + "/internal/events",
                      params={"stream": stream, "after_seq": 0, "limit": 1000},
                      headers=c.cluster.internal_headers())
    return _ok(resp)["events"]


def history(c: Ctx, token: str, channel: str) -> list[dict[str, Any]]:
    return _ok(call(c, "conversations.history", token, channel=channel, limit=999))["messages"]


def snapshot(c: Ctx) -> dict[str, Any]:
    """Everything a bad request must not change."""
    return {
        "events": {s: events(c, s) for s in c.streams},
        "history": {ch: history(c, c.a["token"], ch) for ch in c.channels},
        "other_history": history(c, c.other["users"][0]["token"], c.other["channels"][0]["id"]),
    }


def assert_healthy(c: Ctx) -> None:
    assert c.http.get(c.cluster.root + "/health").status_code == 200
    body = _ok(call(c, "auth.test", c.a["token"]))
    assert body["user_id"] == c.a["id"]
    history(c, c.b["token"], c.general)


def raw(c: Ctx, method: str, *, content: bytes | None = None,
        headers: dict[str, str] | None = None, token: str | None = None) -> httpx.Response:
    headers = dict(headers or {})
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return c.http.post(c.cluster.api + method, content=content, headers=headers)


def as_json(c: Ctx, method: str, body: Any, token: str | None) -> httpx.Response:
    return raw(c, method, content=json.dumps(body).encode(), headers=JSON, token=token)


# --- the cases -----------------------------------------------------------------------------
# Each case: (id, request builder, expected HTTP status, expected error code).

Case = tuple[str, Callable[[Ctx], httpx.Response], int, str]


def _post(body: Callable[[Ctx], dict[str, Any]], who: str = "a") -> Callable[[Ctx], Any]:
    def send(c: Ctx) -> httpx.Response:
        return as_json(c, "chat.postMessage", body(c), getattr(c, who)["token"])

    return send


def _call(method: str, body: Callable[[Ctx], dict[str, Any]], who: str = "a"
          ) -> Callable[[Ctx], Any]:
    def send(c: Ctx) -> httpx.Response:
        return as_json(c, method, body(c), getattr(c, who)["token"])

    return send


def _raw_post(content: Callable[[Ctx], bytes], headers: dict[str, str]) -> Callable[[Ctx], Any]:
    def send(c: Ctx) -> httpx.Response:
        return raw(c, "chat.postMessage", content=content(c), headers=headers,
                   token=c.a["token"])

    return send


def _chunks(total: int) -> Iterator[bytes]:
    head = b'{"channel":"C0","text":"'
    yield head
    sent = len(head)
    while sent < total:
        piece = b"x" * min(65536, total - sent)
        sent += len(piece)
        yield piece
    yield b'"}'


def _chunked_too_large(c: Ctx) -> httpx.Response:
    # no content-length: the limit must hold while streaming too
    return c.http.post(c.cluster.api + "chat.postMessage", content=_chunks(1_048_576 + 10),
                       headers={**JSON, "authorization": f"Bearer {c.a['token']}"})


AUTH_CASES: list[Case] = [
    ("no-token", lambda c: as_json(c, "chat.postMessage",
                                   {"channel": c.general, "text": "hi"}, None),
     200, "not_authed"),
    ("no-token-form", lambda c: raw(c, "chat.postMessage",
                                    content=f"channel={c.general}&text=hi".encode(),
                                    headers=FORM), 200, "not_authed"),
    ("empty-bearer", lambda c: raw(c, "chat.postMessage",
                                   content=json.dumps({"channel": c.general,
                                                       "text": "hi"}).encode(),
                                   headers={**JSON, "authorization": "Bearer"}),
     200, "not_authed"),
    ("bad-token-header", lambda c: as_json(c, "chat.postMessage",
                                           {"channel": c.general, "text": "hi"},
                                           "xoxp-0000-bogus"), 200, "invalid_auth"),
    ("bad-token-form-param", lambda c: raw(c, "chat.postMessage",
                                           content=f"token=xoxp-bogus&channel={c.general}"
                                                   "&text=hi".encode(), headers=FORM),
     200, "invalid_auth"),
    ("bad-token-json-param", lambda c: as_json(c, "chat.postMessage",
                                               {"token": "xoxp-bogus", "channel": c.general,
                                                "text": "hi"}, None), 200, "invalid_auth"),
    ("bad-token-query-param", lambda c: c.http.get(
        c.cluster.api + "chat.postMessage",
        params={"token": "xoxp-bogus", "channel": c.general, "text": "hi"}),
     200, "invalid_auth"),
    ("token-not-a-string", lambda c: as_json(c, "chat.postMessage",
                                             {"token": 12345, "channel": c.general,
                                              "text": "hi"}, None), 200, "invalid_auth"),
    ("token-lone-surrogate", lambda c: raw(c, "chat.postMessage",
                                           content=b'{"token":"xoxp-\\ud800","channel":"'
                                                   + c.general.encode()
                                                   + b'","text":"hi"}', headers=JSON),
     200, "invalid_auth"),
]

POST_CASES: list[Case] = [
    ("not-in-public-channel", _post(lambda c: {"channel": c.pub, "text": "hi"}, "b"),
     200, "not_in_channel"),
    ("private-non-member", _post(lambda c: {"channel": c.priv, "text": "hi"}, "b"),
     200, "channel_not_found"),
    ("unknown-channel", _post(lambda c: {"channel": "CZZZZZZZZZZ", "text": "hi"}),
     200, "channel_not_found"),
    ("malformed-channel", _post(lambda c: {"channel": "not a channel'; --", "text": "hi"}),
     200, "channel_not_found"),
    ("empty-channel", _post(lambda c: {"channel": "", "text": "hi"}), 200, "channel_not_found"),
    ("missing-channel", _post(lambda c: {"text": "hi"}), 200, "channel_not_found"),
    ("other-workspace-channel", _post(lambda c: {"channel": c.other["channels"][0]["id"],
                                                 "text": "hi"}), 200, "channel_not_found"),
    ("missing-text", _post(lambda c: {"channel": c.general}), 200, "no_text"),
    ("empty-text", _post(lambda c: {"channel": c.general, "text": ""}), 200, "no_text"),
    ("text-40001", _post(lambda c: {"channel": c.general, "text": "x" * 40_001}),
     200, "msg_too_long"),
    ("text-list", _post(lambda c: {"channel": c.general, "text": ["a", "b"]}),
     200, "invalid_arguments"),
    ("text-object", _post(lambda c: {"channel": c.general, "text": {"a": 1}}),
     200, "invalid_arguments"),
    ("text-bool", _post(lambda c: {"channel": c.general, "text": True}),
     200, "invalid_arguments"),
    ("channel-int", _post(lambda c: {"channel": 12345, "text": "hi"}), 200, "invalid_arguments"),
    ("channel-list", _post(lambda c: {"channel": [c.general], "text": "hi"}),
     200, "invalid_arguments"),
    ("thread-not-found", _post(lambda c: {"channel": c.general, "text": "hi",
                                          "thread_ts": "1234567890.123456"}),
     200, "thread_not_found"),
    ("thread-garbage", _post(lambda c: {"channel": c.general, "text": "hi",
                                        "thread_ts": "yesterday"}), 200, "thread_not_found"),
    ("thread-in-other-channel", lambda c: as_json(c, "chat.postMessage", {
        "channel": c.pub, "text": "hi",
        "thread_ts": history(c, c.a["token"], c.general)[0]["ts"]}, c.a["token"]),
     200, "thread_not_found"),
    ("lone-surrogate-text", _raw_post(
        lambda c: b'{"channel":"' + c.general.encode() + b'","text":"a\\ud800b"}', JSON),
     200, "invalid_arguments"),
]

BODY_CASES: list[Case] = [
    ("malformed-json", _raw_post(lambda c: b'{"channel": "C1", "text": ', JSON),
     200, "invalid_json"),
    ("json-array", _raw_post(lambda c: b"[1,2]", JSON), 200, "invalid_json"),
    ("json-string", _raw_post(lambda c: b'"text"', JSON), 200, "invalid_json"),
    ("json-null", _raw_post(lambda c: b"null", JSON), 200, "invalid_json"),
    ("json-charset-param", _raw_post(lambda c: b"{nope", {
        "content-type": "application/json; charset=utf-8"}), 200, "invalid_json"),
    ("json-invalid-utf8", _raw_post(
        lambda c: b'{"channel":"' + c.general.encode() + b'","text":"\xff\xfe"}', JSON),
     200, "invalid_json"),
    ("json-deeply-nested", _raw_post(lambda c: b"[" * 100_000 + b"]" * 100_000, JSON),
     200, "invalid_json"),
    ("json-deeply-nested-in-object", _raw_post(
        lambda c: b'{"channel":"' + c.general.encode() + b'","text":'
        + b"[" * 100_000 + b"]" * 100_000 + b"}", JSON), 200, "invalid_json"),
    ("json-nan-text", _raw_post(
        lambda c: b'{"channel":"' + c.general.encode() + b'","text":NaN}', JSON),
     200, "invalid_json"),
    ("json-infinity-text", _raw_post(
        lambda c: b'{"channel":"' + c.general.encode() + b'","text":-Infinity}', JSON),
     200, "invalid_json"),
    ("api-test-lone-surrogate", lambda c: raw(c, "api.test", content=b'{"foo":"\\ud800"}',
                                              headers=JSON), 200, "invalid_arguments"),
    ("form-bad-percent-utf8", _raw_post(
        lambda c: b"channel=" + c.general.encode() + b"&text=%ff%fe", FORM),
     200, "invalid_form_data"),
    ("form-raw-invalid-utf8", _raw_post(lambda c: b"text=\xff", FORM),
     200, "invalid_form_data"),
    ("form-raw-invalid-utf8-with-channel", _raw_post(
        lambda c: b"channel=" + c.general.encode() + b"&text=\xc3\x28", FORM),
     200, "invalid_form_data"),
    ("multipart-no-boundary", _raw_post(
        lambda c: b"--x\r\n", {"content-type": "multipart/form-data"}),
     200, "invalid_form_data"),
    ("multipart-truncated", _raw_post(
        lambda c: b'--b\r\nContent-Disposition: form-data; name="channel"\r\n\r\n'
        + c.general.encode(), {"content-type": "multipart/form-data; boundary=b"}),
     200, "invalid_form_data"),
    ("multipart-invalid-utf8-text", _raw_post(
        lambda c: b'--b\r\nContent-Disposition: form-data; name="channel"\r\n\r\n'
        + c.general.encode() + b'\r\n--b\r\nContent-Disposition: form-data; name="text"'
        b"\r\n\r\n\xff\xfe\r\n--b--\r\n",
        {"content-type": "multipart/form-data; boundary=b"}), 200, "invalid_form_data"),
    ("unsupported-content-type", _raw_post(
        lambda c: b"<xml/>", {"content-type": "application/xml"}), 200, "invalid_form_data"),
    ("body-over-1mib", _raw_post(lambda c: b'{"text":"' + b"x" * 1_048_576 + b'"}', JSON),
     200, "request_too_large"),
    ("body-over-1mib-chunked", _chunked_too_large, 200, "request_too_large"),
    ("unknown-method", lambda c: as_json(c, "chat.postMessagez",
                                         {"channel": c.general, "text": "hi"}, c.a["token"]),
     200, "unknown_method"),
    ("unknown-method-get", lambda c: c.http.get(
        c.cluster.api + "no.suchMethod", headers={"authorization": f"Bearer {c.a['token']}"}),
     200, "unknown_method"),
]

CREATE_CASES: list[Case] = [
    ("name-empty", _call("conversations.create", lambda c: {"name": ""}),
     200, "invalid_name_required"),
    ("name-missing", _call("conversations.create", lambda c: {}), 200, "invalid_name_required"),
    ("name-81", _call("conversations.create", lambda c: {"name": "a" * 81}),
     200, "invalid_name_maxlength"),
    ("name-300", _call("conversations.create", lambda c: {"name": "a" * 300}),
     200, "invalid_name_maxlength"),
    ("name-space", _call("conversations.create", lambda c: {"name": "Has Space"}),
     200, "invalid_name_specials"),
    ("name-specials", _call("conversations.create", lambda c: {"name": "semi;colon"}),
     200, "invalid_name_specials"),
    ("name-punctuation-only", _call("conversations.create", lambda c: {"name": "---"}),
     200, "invalid_name_punctuation"),
    ("name-not-a-string", _call("conversations.create", lambda c: {"name": ["x"]}),
     200, "invalid_arguments"),
    ("name-taken", _call("conversations.create", lambda c: {"name": c.pub_name}, "b"),
     200, "name_taken"),
    ("name-taken-general", _call("conversations.create", lambda c: {"name": "general"}),
     200, "name_taken"),
    ("is-private-garbage", _call("conversations.create",
                                 lambda c: {"name": "ok-" + secrets.token_hex(3),
                                            "is_private": "maybe"}), 200, "invalid_arguments"),
]

READ_CASES: list[Case] = [
    ("history-limit-abc", _call("conversations.history",
                                lambda c: {"channel": c.general, "limit": "abc"}),
     200, "invalid_arguments"),
    ("history-limit-list", _call("conversations.history",
                                 lambda c: {"channel": c.general, "limit": [1]}),
     200, "invalid_arguments"),
    ("history-limit-bool", _call("conversations.history",
                                 lambda c: {"channel": c.general, "limit": True}),
     200, "invalid_arguments"),
    ("history-garbage-cursor", _call("conversations.history",
                                     lambda c: {"channel": c.general, "cursor": "!!garbage!!"}),
     200, "invalid_cursor"),
    ("history-wrong-cursor-content", _call(
        "conversations.history",
        lambda c: {"channel": c.general,
                   "cursor": base64.b64encode(b"next_ts:-1; DROP TABLE").decode()}),
     200, "invalid_cursor"),
    ("history-non-ascii-cursor", _call("conversations.history",
                                       lambda c: {"channel": c.general, "cursor": "é€"}),
     200, "invalid_cursor"),
    ("history-bad-latest", _call("conversations.history",
                                 lambda c: {"channel": c.general, "latest": "yesterday"}),
     200, "invalid_ts_latest"),
    ("history-bad-oldest", _call("conversations.history",
                                 lambda c: {"channel": c.general, "oldest": "1.2.3"}),
     200, "invalid_ts_oldest"),
    ("history-private-non-member", _call("conversations.history",
                                         lambda c: {"channel": c.priv}, "b"),
     200, "channel_not_found"),
    ("history-other-workspace", _call("conversations.history",
                                      lambda c: {"channel": c.other["channels"][0]["id"]}),
     200, "channel_not_found"),
    ("info-other-workspace", _call("conversations.info",
                                   lambda c: {"channel": c.other["channels"][0]["id"]}),
     200, "channel_not_found"),
    ("join-other-workspace", _call("conversations.join",
                                   lambda c: {"channel": c.other["channels"][0]["id"]}, "b"),
     200, "channel_not_found"),
    ("join-private-non-member", _call("conversations.join",
                                      lambda c: {"channel": c.priv}, "b"),
     200, "channel_not_found"),
    ("presence-other-workspace", _call("users.getPresence",
                                       lambda c: {"user": c.other["users"][0]["id"]}),
     200, "user_not_found"),
    ("presence-garbage-user", _call("users.getPresence", lambda c: {"user": "nobody"}),
     200, "user_not_found"),
    ("presence-user-not-a-string", _call("users.getPresence", lambda c: {"user": 7}),
     200, "user_not_found"),
]

ALL_CASES = AUTH_CASES + POST_CASES + BODY_CASES + CREATE_CASES + READ_CASES


@pytest.mark.parametrize(("send", "status", "error"),
                         [pytest.param(s, st, e, id=i) for i, s, st, e in ALL_CASES])
def test_bad_request_is_refused_and_changes_nothing(
    ctx: Ctx, send: Callable[[Ctx], httpx.Response], status: int, error: str
) -> None:
    before = snapshot(ctx)
    resp = send(ctx)
    assert (resp.status_code, resp.headers.get("content-type", "").split(";")[0]) == (
        status, "application/json"), resp.text[:300]
    assert resp.json() == {"ok": False, "error": error}
    assert snapshot(ctx) == before
    assert_healthy(ctx)


def test_text_of_exactly_40000_chars_is_accepted(ctx: Ctx) -> None:
    before = history(ctx, ctx.a["token"], ctx.general)
    body = _ok(call(ctx, "chat.postMessage", ctx.a["token"], channel=ctx.general,
                        text="y" * 40_000))
    assert body["message"]["text"] == "y" * 40_000
    after = history(ctx, ctx.a["token"], ctx.general)
    assert len(after) == len(before) + 1
    assert after[0]["ts"] == body["ts"] and after[0]["text"] == "y" * 40_000


def test_client_msg_id_makes_a_retried_post_idempotent(ctx: Ctx) -> None:
    cmid = "8f1c7c3e-" + secrets.token_hex(8)
    before_hist = history(ctx, ctx.a["token"], ctx.general)
    before_events = events(ctx, ctx.general)
    first = _ok(call(ctx, "chat.postMessage", ctx.a["token"], channel=ctx.general,
                         text="only once", client_msg_id=cmid))
    second = _ok(call(ctx, "chat.postMessage", ctx.a["token"], channel=ctx.general,
                          text="only once", client_msg_id=cmid))
    assert second["ts"] == first["ts"]
    assert second["message"] == first["message"]
    assert first["message"]["client_msg_id"] == cmid
    after_hist = history(ctx, ctx.a["token"], ctx.general)
    assert len(after_hist) == len(before_hist) + 1
    assert [m["ts"] for m in after_hist if m.get("client_msg_id") == cmid] == [first["ts"]]
    after_events = events(ctx, ctx.general)
    assert len(after_events) == len(before_events) + 1
    assert after_events[-1]["event"]["ts"] == first["ts"]


def test_refused_post_does_not_burn_its_client_msg_id(ctx: Ctx) -> None:
    """A post refused for bad input leaves the client_msg_id free for the corrected retry."""
    cmid = "retry-" + secrets.token_hex(8)
    refused = call(ctx, "chat.postMessage", ctx.a["token"], channel=ctx.general,
                       text="z" * 40_001, client_msg_id=cmid).json()
    assert refused == {"ok": False, "error": "msg_too_long"}
    before = history(ctx, ctx.a["token"], ctx.general)
    posted = _ok(call(ctx, "chat.postMessage", ctx.a["token"], channel=ctx.general,
                          text="corrected", client_msg_id=cmid))
    assert posted["message"]["text"] == "corrected"
    assert len(history(ctx, ctx.a["token"], ctx.general)) == len(before) + 1


def test_webapp_still_serves_valid_posts_after_bad_input(ctx: Ctx) -> None:
    before = events(ctx, ctx.general)
    body = _ok(call(ctx, "chat.postMessage", ctx.b["token"], channel=ctx.general,
                        text="still alive"))
    after = events(ctx, ctx.general)
    assert len(after) == len(before) + 1
    assert after[-1]["event"]["ts"] == body["ts"] and after[-1]["event"]["text"] == "still alive"


def test_sdks_see_slack_statuses_for_errors(ctx: Ctx) -> None:
    """Slack answers every ok:false with HTTP 200 but a rate limit: slack_sdk raises
    SlackApiError with the error code, and nothing looks like a transport failure that an
    SDK would retry (the official Node SDK retried our 404 for up to 30 minutes)."""
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    web = WebClient(token=ctx.a["token"], base_url=ctx.cluster.api)
    for method in ("no.suchMethod", "conversations.kickz"):
        with pytest.raises(SlackApiError) as info:
            web.api_call(method, json={"channel": ctx.general})
        assert info.value.response.status_code == 200
        assert info.value.response["error"] == "unknown_method"
    with pytest.raises(SlackApiError) as info:
        web.chat_postMessage(channel="C0NOTREAL00", text="x")
    assert info.value.response.status_code == 200
    assert info.value.response["error"] == "channel_not_found"


def test_multipart_form_is_accepted_like_any_form(ctx: Ctx) -> None:
    """Slack takes multipart/form-data for every method (the Node SDK sends it when a call
    carries a file); its text fields are the arguments, file parts are ignored."""
    resp = ctx.http.post(ctx.cluster.api + "chat.postMessage",
                         headers={"authorization": f"Bearer {ctx.a['token']}"},
                         data={"channel": ctx.general, "text": "multipart ✓"},
                         files={"file": ("a.txt", b"not an argument", "text/plain")})
    assert resp.status_code == 200 and resp.json()["ok"], resp.text
    assert resp.json()["message"]["text"] == "multipart ✓"
    assert history(ctx, ctx.a["token"], ctx.general)[0]["text"] == "multipart ✓"
