"""gateway_server/client.py: client frames never crash the gateway; slow clients are kicked."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_server.client import (
    GOODBYE,
    MAX_SENDS_IN_FLIGHT,
    Client,
    Limits,
    Send,
    handle_frame,
)


def make_client(streams: set[str] | None = None) -> Client:
    # handle_frame never touches the socket (tests/test_client_output.py covers output)
    client = Client(None, None, "U1", "T1", Limits(1024, 1.0, 4096), lambda *a: None)
    client.streams = set(streams or ())
    client.ready = True  # past hello
    return client


def strict_loads(raw: str) -> Any:
    def refuse(const: str) -> Any:
        raise ValueError(f"not JSON: {const}")

    return json.loads(raw, parse_constant=refuse)


def check_reply(reply: str | None, action: str | Send | None) -> None:
    if reply is None:
        assert isinstance(action, str | Send)
        return
    assert action is None
    body = strict_loads(reply)
    assert isinstance(body, dict)
    if "type" not in body:  # Slack's reply to a message the client sent: an error here
        assert body["ok"] is False and "reply_to" in body
        body["type"] = "error"
    assert body["type"] in ("pong", "error")
    if body["type"] == "error":
        assert isinstance(body["error"]["code"], int)
        assert isinstance(body["error"]["msg"], str)
        if "reply_to" in body:
            assert body["ok"] is False


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_like = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), c,
                                                                         max_size=3)),
                         max_leaves=10)
frames = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(["ping", "typing", "message", "pong", ""]), json_like),
        "id": json_like,
        "channel": st.one_of(st.sampled_from(["C1", "C2", "U1"]), json_like),
        "time": json_like,
        "text": st.one_of(st.text(max_size=30), json_like),
        "thread_ts": st.one_of(st.sampled_from(["1.000001", ""]), json_like),
        "client_msg_id": json_like,
    },
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_handle_frame_never_raises_on_arbitrary_text_or_bytes(raw):
    client = make_client(streams={"C1"})
    reply, channel = handle_frame(client, raw)
    check_reply(reply, channel)


@settings(max_examples=500, deadline=None)
@given(frames)
def test_handle_frame_never_raises_on_arbitrary_objects(frame):
    client = make_client(streams={"C1"})
    raw = json.dumps(frame)  # may contain NaN/Infinity, which Python's json accepts
    reply, action = handle_frame(client, raw)
    check_reply(reply, action)
    if isinstance(action, str):
        assert frame.get("type") == "typing" and action == "C1"
    if isinstance(action, Send):
        assert frame.get("type") == "message"
        assert action.channel == frame["channel"] and action.text == frame["text"]
        assert isinstance(action.text, str) and action.text


@pytest.mark.parametrize("raw", [
    "", "{", "[]", "null", "1", '"ping"', b"\xff", "[" * 100_000, '{"a":' * 100_000,
    "9" * 5000,
])
def test_invalid_json_gets_error_without_reply_to(raw):
    reply, channel = handle_frame(make_client(), raw)
    assert channel is None
    body = strict_loads(reply)
    assert body == {"type": "error", "error": {"code": 1, "msg": "invalid json"}}


@pytest.mark.parametrize("frame_id", [1, 42, "abc", 2**70])
def test_ping_gets_pong_with_reply_to(frame_id):
    raw = json.dumps({"type": "ping", "id": frame_id})
    reply, channel = handle_frame(make_client(), raw)
    assert channel is None
    assert strict_loads(reply) == {"type": "pong", "reply_to": frame_id}


def test_ping_echoes_time_and_accepts_bytes():
    reply, _ = handle_frame(make_client(), b'{"type":"ping","id":3,"time":1700000000}')
    assert strict_loads(reply) == {"type": "pong", "reply_to": 3, "time": 1700000000}


@pytest.mark.parametrize("frame_id", [True, None, 1.5, [1], {"a": 1}])
def test_ping_with_odd_id_has_null_reply_to(frame_id):
    reply, _ = handle_frame(make_client(), json.dumps({"type": "ping", "id": frame_id}))
    assert strict_loads(reply) == {"type": "pong", "reply_to": None}


@pytest.mark.parametrize("raw", ['{"type":"ping","id":1,"time":NaN}',
                                 '{"type":"ping","id":1,"time":Infinity}',
                                 '{"type":"ping","id":1,"time":-Infinity}'])
def test_non_json_constants_are_refused_as_invalid_json(raw):
    # NaN/Infinity are not JSON; echoing them would make our reply unparseable for clients
    reply, channel = handle_frame(make_client(), raw)
    assert channel is None
    assert strict_loads(reply) == {"type": "error", "error": {"code": 1, "msg": "invalid json"}}


def test_pong_omits_a_time_that_overflows_to_infinity():
    reply, channel = handle_frame(make_client(), '{"type":"ping","id":1,"time":1e400}')
    assert channel is None
    assert strict_loads(reply) == {"type": "pong", "reply_to": 1}


def test_typing_in_a_channel_not_subscribed_is_an_error():
    client = make_client(streams={"C1"})
    reply, channel = handle_frame(client, json.dumps({"type": "typing", "id": 5,
                                                      "channel": "C2"}))
    assert channel is None
    assert strict_loads(reply) == {"type": "error", "reply_to": 5, "ok": False,
                                   "error": {"code": 3, "msg": "channel_not_found"}}


@pytest.mark.parametrize("channel", [None, 1, ["C1"], {"id": "C1"}, ""])
def test_typing_with_bad_channel_is_an_error(channel):
    client = make_client(streams={"C1"})
    reply, got = handle_frame(client, json.dumps({"type": "typing", "channel": channel}))
    assert got is None
    assert strict_loads(reply)["error"]["code"] == 3


def test_typing_in_a_member_channel_returns_the_channel():
    client = make_client(streams={"C1", "U1"})
    assert handle_frame(client, '{"type":"typing","id":1,"channel":"C1"}') == (None, "C1")
    assert handle_frame(client, b'{"type":"typing","channel":"C1"}') == (None, "C1")


@pytest.mark.parametrize("kind", ["pong", "", None, 3, "Message"])
def test_unsupported_types_get_error_code_2(kind):
    reply, channel = handle_frame(make_client(), json.dumps({"type": kind, "id": 9}))
    assert channel is None
    assert strict_loads(reply) == {"type": "error", "reply_to": 9, "ok": False,
                                   "error": {"code": 2, "msg": "unsupported message type"}}


def test_message_frame_becomes_a_send_for_the_poster():
    reply, action = handle_frame(make_client(), json.dumps({
        "type": "message", "id": 4, "channel": "C1", "text": "hi", "thread_ts": "1.000001",
        "client_msg_id": "abc"}))
    assert reply is None
    assert action == Send(4, "C1", "hi", "1.000001", "abc")
    # the channel need not be one the socket follows: the webapp decides (names, DMs)
    _, action = handle_frame(make_client(), b'{"type":"message","channel":"#general","text":"x"}')
    assert action == Send(None, "#general", "x")


@pytest.mark.parametrize(("frame", "msg"), [
    ({"text": "x"}, "channel_not_found"),
    ({"channel": "", "text": "x"}, "channel_not_found"),
    ({"channel": ["C1"], "text": "x"}, "channel_not_found"),
    ({"channel": "C1"}, "message text is missing"),
    ({"channel": "C1", "text": ""}, "message text is missing"),
    ({"channel": "C1", "text": 5}, "invalid_arguments"),
    ({"channel": "C1", "text": {"a": 1}}, "invalid_arguments"),
    ({"channel": "C1", "text": "a\ud800b"}, "invalid_arguments"),
    ({"channel": "C\udfff", "text": "x"}, "channel_not_found"),
    ({"channel": "C1", "text": "x", "client_msg_id": "\ud800"}, "invalid_arguments"),
    ({"channel": "C1", "text": "x", "thread_ts": 1.5}, "thread_not_found"),
    ({"channel": "C1", "text": "x", "client_msg_id": 7}, "invalid_arguments"),
    ({"channel": "C1", "text": "x", "client_msg_id": "c" * 65}, "invalid_arguments"),
])
def test_bad_message_frames_get_slacks_rtm_error(frame, msg):
    reply, action = handle_frame(make_client(), json.dumps({"type": "message", "id": 7,
                                                            **frame}))
    assert action is None
    assert strict_loads(reply) == {"ok": False, "reply_to": 7,
                                   "error": {"code": 2, "msg": msg}}


def test_bad_message_frame_without_id_gets_the_error_event():
    reply, _ = handle_frame(make_client(), '{"type":"message","channel":"C1"}')
    assert strict_loads(reply) == {"type": "error",
                                   "error": {"code": 2, "msg": "message text is missing"}}


def test_send_queue_is_bounded_and_never_blocks():
    client = make_client()
    sends = [Send(i, "C1", "x") for i in range(MAX_SENDS_IN_FLIGHT + 3)]
    accepted = [client.queue_send(s) for s in sends]
    assert accepted == [True] * MAX_SENDS_IN_FLIGHT + [False] * 3
    assert [client.next_send() for _ in range(MAX_SENDS_IN_FLIGHT)] == \
        sends[:MAX_SENDS_IN_FLIGHT]
    assert client.next_send() is None
    assert client.queue_send(sends[-1])  # room again once the poster took them


def test_goodbye_frame():
    assert json.loads(GOODBYE) == {"type": "goodbye", "source": "gateway_server"}


def test_first_kick_reason_wins():
    client = make_client()
    client.kick("ring change")
    client.push("x")
    client.kick("too slow")
    assert client.kick_reason == "ring change"


def test_client_ids_are_unique():
    assert len({make_client().id for _ in range(50)}) == 50


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_typing_is_limited_per_channel(times):
    client = make_client()
    allowed = [t for t in sorted(times) if client.may_type("C1", t, 3.0)]
    assert all(b - a >= 3.0 for a, b in zip(allowed, allowed[1:], strict=False))
    assert client.may_type("C2", max(times, default=0), 3.0)  # other channels unaffected
