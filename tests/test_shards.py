"""cluster/shards.py (Vitess-style keyranges) and the database names derived from shards."""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import settings as settings_mod
from cluster.settings import Settings
from cluster.shards import (
    in_keyrange,
    keyspace_id,
    parse_keyrange,
    shard_for,
    validate_shards,
    vschema,
)

TWO = ["-80", "80-"]
FOUR = ["-40", "40-80", "80-c0", "c0-"]
LAYOUTS = [TWO, FOUR, ["-"], ["-20", "20-4000", "4000-f0", "f0-"]]
DB_NAME = re.compile(r"^[a-z0-9_]+$")

keys = st.text(max_size=40)


def test_keyspace_id_is_first_8_bytes_of_md5():
    for key in ["", "C123", "U9", "é日本"]:
        assert keyspace_id(key) == hashlib.md5(key.encode("utf-8")).digest()[:8]
        assert len(keyspace_id(key)) == 8


@settings(max_examples=300, deadline=None)
@given(keys, st.sampled_from(LAYOUTS))
def test_shard_for_is_deterministic_listed_and_agrees_with_in_keyrange(key, shards):
    shard = shard_for(key, shards)
    assert shard in shards
    assert shard_for(key, shards) == shard
    ksid = keyspace_id(key)
    covering = [s for s in shards if in_keyrange(ksid, s)]
    assert covering == [shard]  # exactly one shard covers each keyspace id


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=8, max_size=8))
def test_four_shard_layout_routes_by_first_byte(ksid):
    first = ksid[0]
    expected = FOUR[first // 0x40]
    assert [s for s in FOUR if in_keyrange(ksid, s)] == [expected]
    assert in_keyrange(ksid, "-80") == (first < 0x80)
    assert in_keyrange(ksid, "80-") == (first >= 0x80)


def test_keyrange_bounds_inclusive_start_exclusive_end():
    assert in_keyrange(b"\x80" + b"\x00" * 7, "80-")
    assert not in_keyrange(b"\x80" + b"\x00" * 7, "-80")
    assert in_keyrange(b"\x7f" + b"\xff" * 7, "-80")
    assert in_keyrange(b"\x00" * 8, "-40")
    assert in_keyrange(b"\xff" * 8, "c0-")
    assert in_keyrange(b"\x40" + b"\x00" * 7, "40-80")
    assert not in_keyrange(b"\x3f" + b"\xff" * 7, "40-80")


def test_keyspace_ids_spread_over_both_shards():
    rnd = random.Random(20240501)
    sample = [f"C{rnd.getrandbits(64):016X}" for _ in range(5000)]
    counts = Counter(shard_for(k, TWO) for k in sample)
    for shard in TWO:
        assert 0.35 <= counts[shard] / len(sample) <= 0.65, counts
    counts4 = Counter(shard_for(k, FOUR) for k in sample)
    assert set(counts4) == set(FOUR)


@pytest.mark.parametrize("shards", LAYOUTS + [["-10", "10-11", "11-"]])
def test_validate_accepts_good_layouts(shards):
    validate_shards(shards)


@pytest.mark.parametrize("shards", [
    [],                                   # nothing
    ["-80"],                              # end not open
    ["80-"],                              # start not open
    ["00-80", "80-"],                     # start not open (explicit 00)
    ["-80", "80-ff"],                     # end not open
    ["-40", "80-"],                       # gap
    ["-40", "40-80", "c0-"],              # gap in the middle
    ["-80", "40-"],                       # overlap
    ["-c0", "80-"],                       # overlap
    ["80-", "-80"],                       # unordered
    ["-40", "80-c0", "40-80", "c0-"],     # unordered
    ["-", "-"],                           # whole keyspace twice
    ["-80", "80-", "-80", "80-"],         # the layout twice
    ["-c0", "c0-80", "80-"],              # inverted middle range: 80..c0 covered twice
    ["-80", "80-80", "80-"],              # empty range
])
def test_validate_rejects_bad_layouts(shards):
    with pytest.raises(ValueError):
        validate_shards(shards)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=2), max_size=6))
def test_validate_agrees_with_a_definition_of_a_partition(cuts):
    """A layout is valid iff its bounds strictly increase from open to open."""
    bounds = [b""] + cuts + [b""]
    shards = [f"{a.hex()}-{b.hex()}" for a, b in zip(bounds, bounds[1:], strict=False)]
    inner = cuts
    good = all(a < b for a, b in zip(inner, inner[1:], strict=False))
    if good:
        validate_shards(shards)
        rnd = random.Random(len(shards))
        for _ in range(50):
            ksid = rnd.randbytes(8)
            assert len([s for s in shards if in_keyrange(ksid, s)]) == 1
    else:
        with pytest.raises(ValueError):
            validate_shards(shards)


@pytest.mark.parametrize("bad", ["80", "", "zz-", "-8", "8-", "-80-", "x-y"])
def test_parse_keyrange_rejects_malformed(bad):
    with pytest.raises(ValueError):
        parse_keyrange(bad)


def test_parse_keyrange_accepts_open_bounds():
    assert parse_keyrange("-80") == (b"", b"\x80")
    assert parse_keyrange("80-") == (b"\x80", b"")
    assert parse_keyrange("-") == (b"", b"")
    assert parse_keyrange("40-80") == (b"\x40", b"\x80")


def test_shard_for_without_cover_raises_lookup_error():
    with pytest.raises(LookupError):
        shard_for("C1", [])


def test_vschema_lists_every_table():
    doc = vschema(TWO)
    assert doc["sharded"] is True
    assert doc["shards"] == TWO
    assert doc["vindexes"] == {"md5": {"type": "binary_md5"}}
    expected = {"channels", "channel_members", "stream_seq", "events", "messages",
                "user_channels"}
    assert set(doc["tables"]) == expected
    for spec in doc["tables"].values():
        (vindex,) = spec["column_vindexes"]
        assert vindex["name"] == "md5"
    assert doc["tables"]["user_channels"]["column_vindexes"][0]["column"] == "user_id"


def test_vschema_covers_every_table_in_the_chat_schema():
    from webapp import schema

    created = set()
    for ddl in schema.CHAT:
        m = re.search(r"CREATE TABLE(?: IF NOT EXISTS)?\s+`?(\w+)`?", ddl, re.I)
        assert m, ddl
        created.add(m.group(1))
    assert created == set(vschema(TWO)["tables"])


@pytest.mark.parametrize("shard,slug", [("-80", "x_80"), ("80-", "80_x"), ("40-80", "40_80"),
                                        ("-", "x_x")])
def test_shard_slug(shard, slug):
    assert settings_mod.shard_slug(shard) == slug


@pytest.mark.parametrize("shards", LAYOUTS)
def test_db_names_are_safe_and_distinct(shards):
    s = Settings()
    names = [s.db_name("chat", shard) for shard in shards]
    names.append(s.db_name("directory"))
    for name in names:
        assert DB_NAME.match(name), name
    assert len(set(names)) == len(names)
    assert s.db_name("directory") == "backchannel_directory"
    assert Settings(db_prefix="bctest_1").db_name("chat", "-80") == "bctest_1_chat_x_80"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=3), max_size=5, unique=True))
def test_db_name_for_any_lowercase_keyrange_is_safe(cuts):
    cuts = sorted(cuts)
    bounds = [b""] + cuts + [b""]
    s = Settings()
    for a, b in zip(bounds, bounds[1:], strict=False):
        assert DB_NAME.match(s.db_name("chat", f"{a.hex()}-{b.hex()}"))


@pytest.mark.parametrize("shards", [["-C0", "C0-"], ["-4A", "4A-"]])
def test_db_name_for_uppercase_keyrange_is_safe_or_rejected(shards):
    """parse_keyrange accepts upper-case hex, so a layout spelled that way must either be
    rejected or still give [a-z0-9_] database names (the same keyrange, one database)."""
    try:
        validate_shards(shards)
        names = [Settings().db_name("chat", shard) for shard in shards]
    except ValueError:
        return
    for name, shard in zip(names, shards, strict=True):
        assert DB_NAME.match(name), name
        assert name == Settings().db_name("chat", shard.lower())
