"""presence_server/state.py PresenceState with an injected clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from presence_server.state import PresenceState

TTL = 30.0


def test_unknown_user_is_offline():
    state = PresenceState(TTL)
    assert state.lookup("U1", now=0.0) == {"user": "U1", "online": False,
                                           "connection_count": 0, "last_activity": 0}


def test_connections_are_summed_across_gateways():
    state = PresenceState(TTL)
    state.sync("gw-1", {"U1": 2, "U2": 1}, now=100.0, wall=1_700_000_000.5)
    state.sync("gw-2", {"U1": 3}, now=101.0, wall=1_700_000_001.0)
    assert state.connections("U1", now=102.0) == 5
    assert state.connections("U2", now=102.0) == 1
    assert state.connections("U3", now=102.0) == 0
    assert state.lookup("U1", now=102.0) == {"user": "U1", "online": True,
                                             "connection_count": 5,
                                             "last_activity": 1_700_000_001}
    assert state.lookup("U2", now=102.0)["online"] is True
    # a user appearing on a gateway (a new connection) counts as activity
    assert state.lookup("U2", now=102.0)["last_activity"] == 1_700_000_000


def test_resync_replaces_a_gateways_previous_report():
    state = PresenceState(TTL)
    state.sync("gw-1", {"U1": 2}, now=0.0, wall=10.0)
    state.sync("gw-1", {"U1": 1}, now=5.0, wall=15.0)
    assert state.connections("U1", now=5.0) == 1
    # still connected on that gateway: last activity is when the user came online
    assert state.lookup("U1", now=5.0)["last_activity"] == 10


def test_resync_with_zero_users_makes_user_offline():
    state = PresenceState(TTL)
    state.sync("gw-1", {"U1": 1}, now=0.0, wall=10.0)
    state.sync("gw-2", {"U1": 1}, now=0.0, wall=10.0)
    state.sync("gw-1", {}, now=1.0, wall=11.0)
    assert state.lookup("U1", now=1.0)["connection_count"] == 1
    state.sync("gw-2", {}, now=2.0, wall=12.0)
    found = state.lookup("U1", now=2.0)
    assert found["online"] is False and found["connection_count"] == 0
    assert found["last_activity"] == 10  # remembered after going offline


def test_coming_back_online_updates_last_activity():
    state = PresenceState(TTL)
    state.sync("gw-1", {"U1": 1}, now=0.0, wall=10.0)
    state.sync("gw-1", {}, now=1.0, wall=11.0)
    state.sync("gw-1", {"U1": 1}, now=2.0, wall=50.0)
    assert state.lookup("U1", now=2.0)["last_activity"] == 50


def test_silent_gateway_stops_counting_after_ttl_and_expire_removes_it():
    state = PresenceState(TTL)
    state.sync("gw-1", {"U1": 1}, now=0.0, wall=10.0)
    state.sync("gw-2", {"U1": 2}, now=20.0, wall=30.0)
    assert state.connections("U1", now=TTL) == 3  # exactly ttl old still counts
    assert state.expire(now=TTL) == []
    assert state.connections("U1", now=TTL + 0.5) == 2  # gw-1 is stale
    assert state.lookup("U1", now=TTL + 0.5)["online"] is True
    assert set(state.gateways) == {"gw-1", "gw-2"}  # not removed until expire()
    assert state.expire(now=TTL + 0.5) == ["gw-1"]
    assert set(state.gateways) == {"gw-2"}
    assert state.connections("U1", now=20.0 + TTL + 1) == 0
    assert state.lookup("U1", now=20.0 + TTL + 1)["online"] is False
    assert state.expire(now=20.0 + TTL + 1) == ["gw-2"]
    assert state.gateways == {}
    assert state.expire(now=1e9) == []


def test_stale_gateway_counts_again_after_it_reports():
    state = PresenceState(TTL)
    state.sync("gw-1", {"U1": 1}, now=0.0, wall=10.0)
    assert state.connections("U1", now=100.0) == 0
    state.sync("gw-1", {"U1": 1}, now=100.0, wall=110.0)
    assert state.connections("U1", now=100.0) == 1


def test_sync_copies_the_callers_dict():
    state = PresenceState(TTL)
    users = {"U1": 1}
    state.sync("gw-1", users, now=0.0, wall=0.0)
    users["U1"] = 99
    users["U2"] = 1
    assert state.connections("U1", now=0.0) == 1
    assert state.connections("U2", now=0.0) == 0


reports = st.dictionaries(
    st.sampled_from(["gw-1", "gw-2", "gw-3", "gw-4"]),
    st.tuples(st.floats(min_value=0, max_value=200, allow_nan=False),
              st.dictionaries(st.sampled_from(["U1", "U2", "U3"]),
                              st.integers(min_value=1, max_value=50))),
)


@settings(max_examples=300)
@given(reports, st.floats(min_value=0, max_value=300, allow_nan=False))
def test_connections_equal_sum_over_fresh_gateways(gw_reports, now):
    state = PresenceState(TTL)
    for gateway, (seen, users) in gw_reports.items():
        state.sync(gateway, users, now=seen, wall=seen)
    for user in ["U1", "U2", "U3"]:
        expected = sum(users.get(user, 0) for seen, users in gw_reports.values()
                       if now - seen <= TTL)
        assert state.connections(user, now) == expected
        assert state.lookup(user, now)["online"] == (expected > 0)
    gone = state.expire(now)
    assert sorted(gone) == sorted(g for g, (seen, _) in gw_reports.items() if now - seen > TTL)
    # expiring never changes the answer
    for user in ["U1", "U2", "U3"]:
        expected = sum(users.get(user, 0) for seen, users in gw_reports.values()
                       if now - seen <= TTL)
        assert state.connections(user, now) == expected
