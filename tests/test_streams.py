"""channel_server/streams.py StreamState: per-stream seq ordering, dedup and gap handling."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from channel_server.streams import MAX_PENDING, StreamState


def item(seq: int) -> str:
    return f'{{"seq":{seq}}}'


@st.composite
def baseline_first_permutations(draw, max_n: int = 40):
    """(baseline, seqs): a permutation of baseline..baseline+n whose first element is the
    minimum, as the first event a channel server sees is its baseline."""
    baseline = draw(st.integers(min_value=0, max_value=10**12))
    n = draw(st.integers(min_value=0, max_value=max_n))
    rest = draw(st.permutations(list(range(baseline + 1, baseline + n + 1))))
    return baseline, [baseline, *rest]


@settings(max_examples=300)
@given(baseline_first_permutations())
def test_every_seq_delivered_exactly_once_in_order(case):
    baseline, seqs = case
    state = StreamState()
    delivered: list[tuple[int, str]] = []
    for seq in seqs:
        out = state.offer(seq, item(seq))
        delivered += out
        # everything delivered so far is a gap-free prefix
        assert [s for s, _ in delivered] == list(range(baseline, baseline + len(delivered)))
        assert state.next_seq == baseline + len(delivered)
    assert delivered == [(s, item(s)) for s in range(baseline, baseline + len(seqs))]
    assert state.pending == {}
    assert state.gap is None
    assert state.baseline == baseline


@settings(max_examples=300)
@given(baseline_first_permutations(), st.data())
def test_duplicates_are_never_delivered_twice(case, data):
    baseline, seqs = case
    # offer some seqs a second (or third) time, at arbitrary later points
    offers = list(seqs)
    for _ in range(data.draw(st.integers(min_value=0, max_value=2 * len(seqs)))):
        dup = data.draw(st.sampled_from(seqs))
        first = offers.index(dup)
        at = data.draw(st.integers(min_value=first + 1, max_value=len(offers)))
        offers.insert(at, dup)
    state = StreamState()
    delivered: list[int] = []
    for seq in offers:
        delivered += [s for s, _ in state.offer(seq, item(seq))]
    assert delivered == list(range(baseline, baseline + len(seqs)))


def test_duplicate_before_and_after_delivery():
    state = StreamState()
    assert state.offer(10, "a") == [(10, "a")]
    assert state.offer(10, "a") == []  # after delivery
    assert state.offer(12, "c") == []
    assert state.offer(12, "c'") == []  # while pending: the first copy is kept
    assert state.offer(11, "b") == [(11, "b"), (12, "c")]
    assert state.offer(11, "b") == []
    assert state.offer(12, "c") == []
    assert state.next_seq == 13


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=10**9), st.lists(st.integers(min_value=0),
                                                           max_size=20))
def test_seqs_below_the_baseline_pass_straight_through(baseline, lows):
    state = StreamState()
    assert state.offer(baseline, "base") == [(baseline, "base")]
    for low in lows:
        low %= baseline
        assert state.offer(low, "old") == [(low, "old")]
    assert state.baseline == baseline
    assert state.next_seq == baseline + 1
    assert state.pending == {}


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=10**6),
       st.sets(st.integers(min_value=1, max_value=60), max_size=30))
def test_gap_reports_first_missing_and_first_pending(baseline, offsets):
    state = StreamState()
    state.offer(baseline, item(baseline))
    for off in sorted(offsets, reverse=True):
        state.offer(baseline + off, item(baseline + off))
    # contiguous run from the baseline is delivered, the rest waits
    run = 0
    while run + 1 in offsets:
        run += 1
    waiting = sorted(o for o in offsets if o > run)
    assert state.next_seq == baseline + run + 1
    assert sorted(state.pending) == [baseline + o for o in waiting]
    if waiting:
        assert state.gap == (baseline + run + 1, baseline + waiting[0])
    else:
        assert state.gap is None


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=10**6),
       st.sets(st.integers(min_value=2, max_value=60), min_size=1, max_size=30))
def test_skip_gap_delivers_pending_in_order_and_moves_next_seq(baseline, offsets):
    state = StreamState()
    state.offer(baseline, item(baseline))
    for off in offsets:
        assert state.offer(baseline + off, item(baseline + off)) == []
    assert state.gap == (baseline + 1, baseline + min(offsets))
    out = state.skip_gap()
    first = min(offsets)
    run = 0
    while first + run + 1 in offsets:
        run += 1
    expected = list(range(baseline + first, baseline + first + run + 1))
    assert out == [(s, item(s)) for s in expected]
    assert state.next_seq == expected[-1] + 1
    remaining = sorted(baseline + o for o in offsets if baseline + o > expected[-1])
    assert sorted(state.pending) == remaining
    # a late arrival of a skipped seq is not delivered any more
    assert state.offer(baseline + 1, item(baseline + 1)) == []
    # skipping repeatedly drains everything, in order
    drained = [s for s, _ in out]
    while state.gap is not None:
        drained += [s for s, _ in state.skip_gap()]
    assert drained == sorted(baseline + o for o in offsets)
    assert state.skip_gap() == []


def test_skip_gap_without_pending_is_a_no_op():
    state = StreamState()
    assert state.skip_gap() == []
    state.offer(5, "x")
    assert state.skip_gap() == []
    assert state.next_seq == 6


def test_recent_keeps_delivered_items_in_order_and_is_bounded():
    state = StreamState()
    for seq in range(1, 301):
        state.offer(seq, item(seq))
    assert list(state.recent) == [(s, item(s)) for s in range(101, 301)]


def test_overflowing():
    state = StreamState()
    state.offer(0, "0")
    for seq in range(2, MAX_PENDING + 2):
        state.offer(seq, "x")
    assert len(state.pending) == MAX_PENDING
    assert not state.overflowing()
    state.offer(MAX_PENDING + 5, "x")
    assert state.overflowing()
    assert len(state.skip_gap()) == MAX_PENDING
    assert not state.overflowing()
