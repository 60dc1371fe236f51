"""cluster/wire.py: internal frames, the encode-once item and defensive parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import wire
from cluster.wire import BadFrame


def strict_loads(raw: str | bytes) -> Any:
    """json.loads that refuses NaN/Infinity, which are not JSON."""

    def refuse(const: str) -> Any:
        raise ValueError(f"not JSON: {const}")

    return json.loads(raw, parse_constant=refuse)


TRICKY = ['"', "\\", "\n", "\r", "\t", "\u2028", "\u2029", "\x00", "é", "日本", "😀",
          "</script>", "'", "\\u0000", "]", "}", ","]
tricky_text = st.one_of(
    st.text(),
    st.lists(st.sampled_from(TRICKY), max_size=12).map("".join),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63),
                                                                max_value=2**63),
                         st.floats(allow_nan=False, allow_infinity=False), tricky_text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(tricky_text, children, max_size=4)),
    max_leaves=20,
)
events = st.builds(
    lambda kind, extra: {**extra, "type": kind},
    st.one_of(st.sampled_from(["message", "user_typing", "channel_joined", "reaction_added"]),
              tricky_text),
    st.dictionaries(tricky_text.filter(lambda k: k != "_at"), json_values, max_size=6),
)
stream_ids = st.text(min_size=1, max_size=64)


def as_sent(stream: str, seq: int, event: dict[str, Any]) -> dict[str, Any]:
    """What a client receives: a stream event carries its position (docs/rtm.md);
    an ephemeral one (seq 0) does not."""
    return {**event, "stream": stream, "seq": seq} if seq > 0 else event


@settings(max_examples=300, deadline=None)
@given(stream_ids, st.integers(min_value=0, max_value=2**62), events)
def test_encode_item_is_json_whose_payload_is_the_event(stream, seq, event):
    raw = wire.encode_item(stream, seq, event)
    item = strict_loads(raw)
    assert set(item) == {"stream", "seq", "kind", "ref", "payload"}
    assert item["stream"] == stream and item["seq"] == seq
    assert item["kind"] == event["type"]
    assert isinstance(item["ref"], str)
    assert isinstance(item["payload"], str)
    assert strict_loads(item["payload"]) == as_sent(stream, seq, event)
    raw.encode("utf-8")  # goes out as a WebSocket text frame


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(stream_ids, st.integers(min_value=0, max_value=2**40), events),
                max_size=8))
def test_events_frame_is_json_with_items_in_order(batch):
    items = [wire.encode_item(s, q, e) for s, q, e in batch]
    frame = strict_loads(wire.events_frame(items))
    assert frame["type"] == "events"
    assert [(i["stream"], i["seq"]) for i in frame["items"]] == [(s, q) for s, q, _ in batch]
    assert [strict_loads(i["payload"]) for i in frame["items"]] == [as_sent(s, q, e)
                                                                   for s, q, e in batch]
    assert wire.loads(wire.events_frame(items))["type"] == "events"


@settings(max_examples=100, deadline=None)
@given(events, st.one_of(st.integers(min_value=0, max_value=2**62), json_values))
def test_internal_at_becomes_an_item_field_and_never_reaches_clients(event, at):
    raw = wire.encode_item("U1", 3, {**event, "_at": at})
    item = strict_loads(raw)
    # the client's bytes lack "_at"
    assert strict_loads(item["payload"]) == as_sent("U1", 3, event)
    if type(at) is int:
        assert item["at"] == at
    else:
        assert "at" not in item
    assert strict_loads(wire.events_frame([raw]))["items"][0] == item


def test_position_is_appended_once_and_replays_are_byte_identical():
    """A replay re-encodes from the stored event: it must give the live bytes exactly."""
    event = {"type": "message", "channel": "C1", "text": "h\u00e9 \"q\"", "ts": "1.000001"}
    live = json.loads(wire.encode_item("C1", 42, event))["payload"]
    stored = json.dumps(event, separators=(",", ":"))  # how the event log keeps it
    assert wire.client_payload("C1", 42, json.loads(stored)) == live
    assert live.endswith(',"stream":"C1","seq":42}')


def test_events_frame_of_nothing():
    assert strict_loads(wire.events_frame([])) == {"type": "events", "items": []}


def test_events_frame_reuses_item_bytes_verbatim():
    item = wire.encode_item("C1", 7, {"type": "message", "text": "héllo \"x\"\n"})
    assert item in wire.events_frame([item, item])


def _kind_ref(event: dict[str, Any]) -> tuple[str, str]:
    item = json.loads(wire.encode_item("S", 1, event))
    return item["kind"], item["ref"]


@pytest.mark.parametrize("kind", ["channel_joined", "channel_left", "im_created",
                                  "group_joined", "group_left"])
def test_kind_ref_for_membership_events(kind):
    assert _kind_ref({"type": kind, "channel": {"id": "C123", "name": "general"}}) == \
        (kind, "C123")
    assert _kind_ref({"type": kind, "channel": "C456"}) == (kind, "C456")
    assert _kind_ref({"type": kind}) == (kind, "")
    assert _kind_ref({"type": kind, "channel": {}}) == (kind, "")


def test_kind_ref_for_user_typing_and_others():
    assert _kind_ref({"type": "user_typing", "channel": "C1", "user": "U7"}) == \
        ("user_typing", "U7")
    assert _kind_ref({"type": "message", "channel": "C1", "user": "U7"}) == ("message", "")
    assert _kind_ref({"text": "no type"}) == ("", "")


@pytest.mark.parametrize("raw", [
    "", "not json", "{", "{'type': 'x'}", b"\xff\xfe\x00", b"\x80abc", "[]", "[1, 2]", "1",
    '"type"', "null", "true", "{}", '{"type": 1}', '{"type": null}', '{"type": ["x"]}',
    '{"id": 1}', "[" * 100_000, "{\"a\":" * 100_000, "[" * 100_000 + "]" * 100_000,
])
def test_loads_rejects_everything_but_typed_objects(raw):
    with pytest.raises(BadFrame):
        wire.loads(raw)


def test_loads_untyped_allows_objects_without_type():
    assert wire.loads('{"id": 1}', typed=False) == {"id": 1}
    with pytest.raises(BadFrame):
        wire.loads("[]", typed=False)


def test_loads_accepts_str_and_bytes():
    assert wire.loads('{"type":"ack","id":3}') == {"type": "ack", "id": 3}
    assert wire.loads(b'{"type":"ack","id":3}') == {"type": "ack", "id": 3}


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_loads_raises_only_bad_frame(raw):
    try:
        frame = wire.loads(raw)
    except BadFrame:
        return
    assert isinstance(frame, dict) and isinstance(frame["type"], str)


def test_dumps_is_compact_and_keeps_unicode():
    assert wire.dumps({"type": "x", "t": "é"}) == '{"type":"x","t":"é"}'


def test_field_types():
    frame = {"id": 3, "flag": True, "name": "n", "list": [1], "f": 1.5}
    assert wire.field(frame, "id", int) == 3
    assert wire.field(frame, "name", str) == "n"
    assert wire.field(frame, "flag", bool) is True
    assert wire.field(frame, "f", (int, float)) == 1.5
    for name, kind in [("flag", int), ("flag", (int, float)), ("id", str), ("name", int),
                       ("missing", str), ("list", dict)]:
        with pytest.raises(BadFrame):
            wire.field(frame, name, kind)


@pytest.mark.parametrize("value", [True, False])
def test_field_rejects_bool_where_int_expected(value):
    with pytest.raises(BadFrame):
        wire.field({"id": value}, "id", int)
    with pytest.raises(BadFrame):
        wire.field({"seq": value}, "seq", (int,))


def test_str_list():
    assert wire.str_list({"streams": ["C1", "U2"]}, "streams") == ["C1", "U2"]
    assert wire.str_list({"streams": []}, "streams") == []
    assert wire.str_list({"streams": ["x" * 64]}, "streams") == ["x" * 64]
    for bad in [["C1", 2], [None], [""], ["x" * 65], [["C1"]], "C1", None, {"C1": 1}]:
        with pytest.raises(BadFrame):
            wire.str_list({"streams": bad}, "streams")
    with pytest.raises(BadFrame):
        wire.str_list({}, "streams")
    with pytest.raises(BadFrame):
        wire.str_list({"streams": ["C"] * 11}, "streams", limit=10)
    assert len(wire.str_list({"streams": ["C"] * 10}, "streams", limit=10)) == 10


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=80), st.integers(), st.none()), max_size=10))
def test_str_list_accepts_exactly_short_nonempty_strings(values):
    ok = all(isinstance(v, str) and 0 < len(v) <= 64 for v in values)
    if ok:
        assert wire.str_list({"s": values}, "s") == values
    else:
        with pytest.raises(BadFrame):
            wire.str_list({"s": values}, "s")
