"""ring_manager/plan.py: who the ring manager replaces or removes, and when."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.ring import Member, Ring, RingConfig, moved
from ring_manager.plan import Liveness, heal, rebuild

TTL = 1500


def lease(url: str, expires: int, **extra) -> dict:
    return {"url": url, "pid": 1, "expires": expires, **extra}


def ring(*names: str, state: str = "active") -> RingConfig:
    return RingConfig(3, {n: Member(f"ws://{n}", state, n) for n in names})


def test_live_members_change_nothing():
    config = ring("c1", "c2")
    leases = {"c1": lease("ws://c1", 2000), "c2": lease("ws://c2", 2000)}
    live = Liveness(TTL, started_ms=0)
    live.observe(leases)
    assert heal(config, leases, live, 1000) is None


def test_dead_member_is_replaced_by_a_standby_in_its_slot():
    config = ring("c1", "c2")
    live = Liveness(TTL, started_ms=0)
    live.observe({"c1": lease("ws://c1", 2000), "c2": lease("ws://c2", 2000)})
    leases = {"c1": lease("ws://c1", 5000), "s1": lease("ws://s1", 5000, standby=True),
              "fresh": lease("ws://fresh", 5000)}  # c2's expired; `fresh` is no spare
    new, actions = heal(config, leases, live, 2001)
    assert new.epoch == 4
    assert new.members["c2"] == Member("ws://s1", "active", "s1")
    assert actions == ["replace c2: c2 -> s1"]
    streams = [f"C{i}" for i in range(2000)]
    before = Ring(config)
    # exactly the dead process's streams move, all to the standby
    assert moved(before, Ring(new), streams) == [s for s in streams if before.owner(s) == "c2"]


def test_dead_member_without_standby_is_removed_and_dead_draining_is_never_replaced():
    config = RingConfig(1, {"c1": Member("ws://c1"), "c2": Member("ws://c2", "draining")})
    live = Liveness(TTL, started_ms=0)
    leases = {"s1": lease("ws://s1", 9000, standby=True)}
    new, actions = heal(config, leases, live, TTL + 1)
    assert set(new.members) == {"c1"} and new.members["c1"].process == "s1"
    assert "remove c2 (c2)" in actions
    new, _ = heal(config, {}, live, TTL + 1)
    assert new.members == {}


def test_only_offered_spares_replace_a_dead_member():
    config = ring("c1", "c2")
    live = Liveness(TTL, started_ms=0)
    leases = {"c1": lease("ws://c1", 9000), "added": lease("ws://added", 9000)}
    new, actions = heal(config, leases, live, TTL + 1)
    assert set(new.members) == {"c1"} and actions == ["remove c2 (c2)"]


def test_a_wiped_registry_does_not_look_like_dead_members():
    """Redis restarted empty: no leases at all for a moment, but the expiries we saw have
    not passed, so nothing is removed; the processes re-register within a heartbeat."""
    config = ring("c1", "c2")
    live = Liveness(TTL, started_ms=0)
    live.observe({"c1": lease("ws://c1", 3000), "c2": lease("ws://c2", 3000)})
    assert heal(config, {}, live, 2500) is None


def test_a_member_never_seen_gets_one_ttl_from_the_managers_start():
    config = ring("c1")
    live = Liveness(TTL, started_ms=10_000)
    assert heal(config, {}, live, 10_000 + TTL) is None
    assert heal(config, {}, live, 10_000 + TTL + 1) is not None


def test_a_process_back_at_a_new_address_is_readdressed():
    config = ring("c1")
    leases = {"c1": lease("ws://elsewhere", 9000)}
    live = Liveness(TTL)
    live.observe(leases)
    new, actions = heal(config, leases, live, 1)
    assert new.members["c1"].url == "ws://elsewhere" and actions == ["readdress c1"]


@settings(max_examples=100)
@given(st.sets(st.sampled_from([f"c{i}" for i in range(8)]), min_size=1),
       st.sets(st.sampled_from([f"c{i}" for i in range(8)] + ["s1", "s2"])),
       st.integers(0, 10_000))
def test_heal_never_keeps_a_dead_member_and_never_touches_a_live_one(members, alive, now):
    config = ring(*sorted(members))
    leases = {p: lease(f"ws://{p}", now + 1, standby=p.startswith("s")) for p in alive}
    live = Liveness(TTL, started_ms=now - TTL - 1)
    live.observe(leases)
    out = heal(config, leases, live, now)
    result = out[0] if out else config
    for slot, m in config.members.items():
        if m.process in alive:
            assert result.members[slot] == m
    assert all(m.process in alive for m in result.members.values())
    processes = [m.process for m in result.members.values()]
    assert len(processes) == len(set(processes))  # one standby never takes two slots
    assert out is None or out[0].epoch == config.epoch + 1


def test_rebuild_from_leases_goes_past_every_epoch_seen():
    leases = {"c1": lease("ws://c1", 1, slot="c1", epoch=7),
              "s1": lease("ws://s1", 1, slot="c2", epoch=9),
              "idle": lease("ws://idle", 1, slot=None, epoch=9)}
    config = rebuild(leases, floor_epoch=3)
    assert config.epoch == 10
    assert config.members == {"c1": Member("ws://c1", "active", "c1"),
                              "c2": Member("ws://s1", "active", "s1")}
    assert rebuild({"idle": leases["idle"]}, 3) is None
