"""cluster/registry.py: which leases count as live, and which gateways rtm.connect hands
out (the recently renewed ones first)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from cluster import registry

TTL_S = 1.5
NOW = 1_000_000


def lease(url: str, expires: int) -> str:
    return json.dumps({"url": url, "pid": 1, "expires": expires})


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3),
                       st.integers(NOW - 3000, NOW + 1500), max_size=8))
def test_recently_renewed_prefers_fresh_leases_and_never_returns_dead_ones(expiries):
    raw = {name: lease(f"ws://{name}", exp) for name, exp in expiries.items()}
    chosen = registry.recently_renewed(raw, TTL_S, NOW)
    alive = {n for n, exp in expiries.items() if exp > NOW}
    fresh = {n for n, exp in expiries.items() if exp - NOW > 750}
    assert set(chosen) == (fresh or alive)
    assert all(url == f"ws://{name}" for name, url in chosen.items())


def test_a_gateway_that_missed_two_renewals_is_skipped_while_others_are_fresh():
    raw = {"gateway-1": lease("ws://a", NOW + 1400), "gateway-2": lease("ws://b", NOW + 600)}
    assert registry.recently_renewed(raw, TTL_S, NOW) == {"gateway-1": "ws://a"}
    raw = {"gateway-2": lease("ws://b", NOW + 600), "broken": "{not json"}
    assert registry.recently_renewed(raw, TTL_S, NOW) == {"gateway-2": "ws://b"}
