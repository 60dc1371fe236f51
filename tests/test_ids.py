"""cluster/ids.py: message ts ordering and format, ids and token digests."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.ids import (
    format_ts,
    hash_token,
    new_id,
    new_token,
    next_ts_us,
    now_us,
    parse_ts,
)

CANONICAL_TS = re.compile(r"[0-9]{1,12}\.[0-9]{6}")
ID_ALPHABET = set(string.ascii_uppercase + string.digits)

clock = st.integers(min_value=0, max_value=10**17)


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=10**17), st.lists(clock, max_size=60))
def test_next_ts_us_strictly_increases_whatever_the_clock_does(start, readings):
    last = start
    for now in readings:
        ts = next_ts_us(now, last)
        assert ts > last
        assert ts >= now  # never behind the clock
        assert ts == now or ts == last + 1  # and never jumps further than it must
        last = ts


@settings(max_examples=100)
@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=50))
def test_repeated_and_backwards_readings_give_unique_ts(readings):
    last, seen = -1, []
    for now in readings + readings[::-1] + readings:
        last = next_ts_us(now, last)
        seen.append(last)
    assert seen == sorted(set(seen))


@settings(max_examples=500)
@given(st.integers(min_value=0, max_value=10**18 - 1))
def test_format_parse_round_trip(us):
    ts = format_ts(us)
    assert CANONICAL_TS.fullmatch(ts), ts
    seconds, micros = ts.split(".")
    assert len(micros) == 6
    assert int(seconds) == us // 1_000_000 and int(micros) == us % 1_000_000
    assert parse_ts(ts) == us


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=10**18 - 1),
       st.integers(min_value=0, max_value=10**18 - 1))
def test_format_ts_denotes_the_same_number_and_keeps_order(a, b):
    # Slack clients compare ts as floats; the string must denote the same number.
    assert float(format_ts(a)) == pytest.approx(a / 1_000_000, rel=1e-12)
    assert (parse_ts(format_ts(a)) < parse_ts(format_ts(b))) == (a < b)


def test_format_ts_examples():
    assert format_ts(0) == "0.000000"
    assert format_ts(1) == "0.000001"
    assert format_ts(1_700_000_000_000_123) == "1700000000.000123"
    assert parse_ts("1700000000.000123") == 1_700_000_000_000_123


@pytest.mark.parametrize("junk", [
    "", ".", "1", "1.", ".000001", "1.00001", "1.0000001", "-1.000000", "+1.000000",
    "1.000000 ", " 1.000000", "1,000000", "1e3.000000", "0x1.000000", "1.000000.000000",
    "1234567890123.000000", "1.00000a",
])
def test_parse_ts_rejects_junk(junk):
    with pytest.raises(ValueError):
        parse_ts(junk)


@pytest.mark.parametrize("junk", [
    "1700000000.000123\n", "١.٠٠٠٠٠٠", "1.00000٣", "１.０００００１",
])
def test_parse_ts_rejects_trailing_newline_and_non_ascii_digits(junk):
    with pytest.raises(ValueError):
        parse_ts(junk)


@pytest.mark.parametrize("junk", [None, 1, 1.5, b"1.000000", ["1.000000"]])
def test_parse_ts_rejects_non_strings(junk):
    with pytest.raises(ValueError):
        parse_ts(junk)


@settings(max_examples=1000)
@given(st.text(max_size=30))
def test_parse_ts_accepts_only_the_canonical_format(text):
    try:
        value = parse_ts(text)
    except ValueError:
        assert not CANONICAL_TS.fullmatch(text)
        return
    assert CANONICAL_TS.fullmatch(text), repr(text)
    assert 0 <= value < 10**18


@settings(max_examples=300)
@given(st.from_regex(r"\A\d{1,12}\.\d{6}\n?\Z"))
def test_parse_ts_near_misses_are_rejected_unless_canonical(text):
    """Unicode digits and a trailing newline look like a ts to a naive regex."""
    try:
        parse_ts(text)
    except ValueError:
        assert not CANONICAL_TS.fullmatch(text)
    else:
        assert CANONICAL_TS.fullmatch(text), repr(text)


@settings(max_examples=300)
@given(st.from_regex(CANONICAL_TS, fullmatch=True))
def test_parse_ts_accepts_every_canonical_ts(text):
    seconds, micros = text.split(".")
    assert parse_ts(text) == int(seconds) * 1_000_000 + int(micros)


@pytest.mark.parametrize("prefix", ["C", "U", "T", "D", "G", "B"])
@pytest.mark.parametrize("length", [1, 10, 20])
def test_new_id_prefix_length_and_alphabet(prefix, length):
    ids = {new_id(prefix, length) for _ in range(200)}
    for value in ids:
        assert value.startswith(prefix)
        assert len(value) == len(prefix) + length
        assert set(value[len(prefix):]) <= ID_ALPHABET
    if length >= 10:
        assert len(ids) == 200


def test_new_id_default_length():
    value = new_id("C")
    assert len(value) == 11 and value[0] == "C" and set(value[1:]) <= ID_ALPHABET


@pytest.mark.parametrize("kind", ["xoxp", "xoxb"])
def test_new_token_shape(kind):
    tokens = {new_token(kind) for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert re.fullmatch(kind + r"-[0-9a-f]{8}-[A-Za-z0-9_-]{32}", token), token


@settings(max_examples=300)
@given(st.text(), st.text())
def test_hash_token_deterministic_hex64_and_distinct(a, b):
    ha = hash_token(a)
    assert re.fullmatch(r"[0-9a-f]{64}", ha)
    assert hash_token(a) == ha
    assert (hash_token(b) == ha) == (a == b)


def test_hash_token_known_value():
    assert hash_token("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_now_us_is_a_plausible_microsecond_clock():
    value = now_us()
    assert isinstance(value, int)
    assert CANONICAL_TS.fullmatch(format_ts(value))
    assert value > 1_600_000_000 * 1_000_000  # after 2020, in micros not seconds/nanos
    assert value < 10**17
