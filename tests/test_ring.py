"""cluster/ring.py: balance, determinism and minimal movement of the consistent-hash ring."""

from __future__ import annotations

import json
import random
import string
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.ring import VNODES, Member, Ring, RingConfig, moved

KEYS = [f"C{i:08d}" for i in range(20_000)]
SMALL_KEYS = KEYS[:3_000]

# Observed over 300 random member sets of 3..12 names with these 20k keys: every member's
# share stayed within 0.75/n .. 1.28/n. The bounds below leave a wide margin.
SHARE_LO, SHARE_HI = 0.5, 1.6

member_name = st.text(alphabet=string.ascii_lowercase + string.digits + "-_.", min_size=1,
                      max_size=16)
member_sets = st.sets(member_name, min_size=3, max_size=12)


def ring_of(names, epoch: int = 1) -> Ring:
    return Ring(RingConfig(epoch=epoch, members={n: f"ws://{n}:1" for n in names}))


def test_vnodes_is_150():
    assert VNODES == 150


@settings(max_examples=25, deadline=None)
@given(member_sets)
def test_every_member_gets_a_fair_share(names):
    ring = ring_of(names)
    counts = Counter(ring.owner(k) for k in KEYS)
    n = len(names)
    assert set(counts) <= names
    for name in names:
        share = counts[name] / len(KEYS)
        assert SHARE_LO / n <= share <= SHARE_HI / n, (name, share * n)


@settings(max_examples=25, deadline=None)
@given(member_sets, st.randoms(use_true_random=False))
def test_owner_is_deterministic_and_independent_of_insertion_order(names, rnd):
    ordered = sorted(names)
    shuffled = list(ordered)
    rnd.shuffle(shuffled)
    a = Ring(RingConfig(1, {n: "ws://a" for n in ordered}))
    b = Ring(RingConfig(7, {n: "ws://b" for n in shuffled}))
    for key in SMALL_KEYS:
        owner = a.owner(key)
        assert owner in names
        assert owner == a.owner(key) == b.owner(key)


@settings(max_examples=25, deadline=None)
@given(member_sets, member_name)
def test_adding_a_member_moves_only_keys_to_it_and_about_one_in_n_plus_one(names, extra):
    if extra in names:
        extra = extra + "-new"
    assert extra not in names
    before = ring_of(names)
    after = ring_of(names | {extra}, epoch=2)
    changed = 0
    for key in KEYS:
        old, new = before.owner(key), after.owner(key)
        if old != new:
            assert new == extra, (key, old, new)
            changed += 1
    n1 = len(names) + 1
    fraction = changed / len(KEYS)
    assert SHARE_LO / n1 <= fraction <= SHARE_HI / n1, fraction * n1


@settings(max_examples=25, deadline=None)
@given(member_sets, st.data())
def test_removing_a_member_moves_only_its_keys(names, data):
    gone = data.draw(st.sampled_from(sorted(names)))
    before = ring_of(names)
    after = ring_of(names - {gone}, epoch=2)
    for key in SMALL_KEYS:
        old, new = before.owner(key), after.owner(key)
        if old == gone:
            assert new != gone and new in names
        else:
            assert new == old, (key, old, new)


@settings(max_examples=25, deadline=None)
@given(member_sets, member_sets)
def test_moved_agrees_with_brute_force(a, b):
    before, after = ring_of(a), ring_of(b, epoch=2)
    expected = [k for k in SMALL_KEYS if before.owner(k) != after.owner(k)]
    assert moved(before, after, SMALL_KEYS) == expected
    assert moved(before, before, SMALL_KEYS) == []


member_docs = st.builds(
    lambda url, state, process: {"url": url, "state": state, "process": process},
    st.text(max_size=40), st.sampled_from(["joining", "active", "draining"]),
    st.text(min_size=1, max_size=20))


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2**53),
       st.dictionaries(st.text(min_size=1, max_size=20), member_docs, max_size=12))
def test_ring_config_json_round_trip(epoch, members):
    config = RingConfig(epoch=epoch, members=members)
    raw = config.to_json()
    doc = json.loads(raw)
    assert doc == {"epoch": epoch, "members": members}
    back = RingConfig.from_json(raw)
    assert back == config
    assert RingConfig.from_json(raw.encode("utf-8")) == config


def test_old_ring_format_reads_as_active_members():
    config = RingConfig.from_json('{"epoch": 3, "members": {"channel-1": "ws://a"}}')
    assert config.members["channel-1"] == Member(url="ws://a", state="active",
                                                 process="channel-1")


def test_bad_member_state_is_refused():
    with pytest.raises(ValueError):
        RingConfig.from_json('{"epoch": 1, "members": {"c": {"url": "u", "state": "zombie"}}}')


@settings(max_examples=25, deadline=None)
@given(member_sets, st.data())
def test_only_active_members_own_streams(names, data):
    state = {n: data.draw(st.sampled_from(["joining", "active", "draining"])) for n in names}
    config = RingConfig(1, {n: Member(f"ws://{n}", s) for n, s in state.items()})
    active = {n for n, s in state.items() if s == "active"}
    ring = Ring(config)
    if not active:
        with pytest.raises(LookupError):
            ring.owner("C1")
        return
    # owners are exactly those of a ring made of the active members alone
    alone = ring_of(active)
    for key in SMALL_KEYS[:500]:
        assert ring.owner(key) == alone.owner(key)


def test_replacing_a_slots_process_moves_exactly_its_streams():
    before = ring_of({"channel-1", "channel-2", "channel-3"})
    after = Ring(before.config.with_member("channel-2", Member("ws://standby", "active",
                                                               "standby-1")))
    moved_keys = moved(before, after, SMALL_KEYS)
    assert moved_keys == [k for k in SMALL_KEYS if before.owner(k) == "channel-2"]
    assert all(after.process(k) == "standby-1" for k in moved_keys)
    assert after.config.slot_of("standby-1") == "channel-2"
    assert after.config.slot_of("channel-2") is None


def test_ring_config_to_json_is_canonical():
    a = RingConfig(3, {"b": "ws://b", "a": "ws://a"})
    b = RingConfig(3, {"a": "ws://a", "b": "ws://b"})
    assert a.to_json() == b.to_json()


@pytest.mark.parametrize("raw", [None, "", b""])
def test_ring_config_from_empty_is_epoch_zero(raw):
    assert RingConfig.from_json(raw) == RingConfig(epoch=0, members={})


def test_with_members_bumps_epoch_and_copies():
    members = {"channel-1": "ws://127.0.0.1:1"}
    config = RingConfig(4, {})
    nxt = config.with_members(members)
    assert nxt.epoch == 5
    assert nxt.members == {"channel-1": Member("ws://127.0.0.1:1", "active", "channel-1")}
    members["channel-2"] = "ws://127.0.0.1:2"
    assert "channel-2" not in nxt.members  # not aliased to the caller's dict
    assert config.epoch == 4 and config.members == {}
    assert nxt.with_members(nxt.members).epoch == 6


def test_empty_ring_raises_lookup_error():
    ring = Ring(RingConfig(0, {}))
    with pytest.raises(LookupError):
        ring.owner("C1")
    with pytest.raises(LookupError):
        ring.owners(["C1"])
    assert ring.owners([]) == {}


def test_single_member_owns_everything():
    ring = ring_of({"only"})
    assert {ring.owner(k) for k in SMALL_KEYS} == {"only"}


def test_address_epoch_and_owners_grouping():
    names = {"channel-1", "channel-2", "channel-3"}
    ring = ring_of(names, epoch=9)
    assert ring.epoch == 9
    assert ring.address("channel-2") == "ws://channel-2:1"
    assert ring.process("C1") == ring.owner("C1")  # a slot's process defaults to its name
    with pytest.raises(KeyError):
        ring.address("nope")
    keys = random.Random(5).sample(SMALL_KEYS, 500)
    grouped = ring.owners(keys)
    assert set(grouped) <= names
    assert sorted(k for ks in grouped.values() for k in ks) == sorted(keys)
    for owner, ks in grouped.items():
        assert all(ring.owner(k) == owner for k in ks)
        # order of the input is kept within each group
        assert ks == [k for k in keys if ring.owner(k) == owner]
