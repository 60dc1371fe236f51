"""channel_server/streams.py StreamState: loading from the event log's head, seq ordering,
dedup, gaps (including a lost last event seen only by a head check) and catch-up by
position."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from channel_server.streams import MAX_PENDING, StreamState


def item(seq: int) -> str:
    return f'{{"seq":{seq}}}'


def loaded(head: int, buffer_size: int = 1000) -> StreamState:
    state = StreamState(buffer_size)
    assert state.load(head) == []
    return state


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=10**12), st.data())
def test_every_seq_after_the_head_delivered_exactly_once_in_order(head, data):
    n = data.draw(st.integers(min_value=0, max_value=40))
    seqs = data.draw(st.permutations(list(range(head + 1, head + n + 1))))
    state = loaded(head)
    delivered: list[tuple[int, str]] = []
    for seq in seqs:
        delivered += state.offer(seq, item(seq))
        # everything delivered so far is a gap-free prefix
        assert [s for s, _ in delivered] == list(range(head + 1, head + 1 + len(delivered)))
    assert delivered == [(s, item(s)) for s in range(head + 1, head + n + 1)]
    assert state.pending == {} and state.gap is None
    assert state.head == head + n


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=1000), st.lists(st.integers(1, 1100), max_size=30),
       st.data())
def test_events_before_the_load_wait_and_only_those_past_the_head_survive(head, early, data):
    """A new owner gets events before it has read the head: they wait, and the ones at or
    below the head (their subscribers catch up by position) are dropped."""
    state = StreamState()
    for seq in early:
        assert state.offer(seq, item(seq)) == []
    assert state.gap is None  # nothing is known to be missing before the load
    out = state.load(head)
    run = []
    nxt = head + 1
    while nxt in set(early):
        run.append(nxt)
        nxt += 1
    assert [s for s, _ in out] == run
    assert all(s > head for s in state.pending)
    assert state.load(head + 50) == []  # loading is once only


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=50), st.data())
def test_duplicates_are_never_delivered_twice(head, data):
    n = data.draw(st.integers(min_value=1, max_value=30))
    seqs = list(range(head + 1, head + n + 1))
    offers = data.draw(st.permutations(seqs))
    offers = offers + data.draw(st.lists(st.sampled_from(seqs + [head, max(head - 1, 1)]),
                                         max_size=40))
    state = loaded(head)
    delivered: list[int] = []
    for seq in offers:
        delivered += [s for s, _ in state.offer(seq, item(seq))]
    assert delivered == seqs


def test_lost_last_event_is_a_gap_once_a_head_check_sees_it():
    state = loaded(5)
    assert state.offer(6, item(6)) == [(6, item(6))]
    assert state.gap is None
    state.saw_head(8)  # 7 and 8 were committed but never reached us
    assert state.gap == (7, 9)
    assert state.offer(7, item(7)) == [(7, item(7))]
    assert state.gap == (8, 9)
    assert state.offer(8, item(8)) == [(8, item(8))]
    assert state.gap is None
    state.saw_head(3)  # an old head changes nothing
    assert state.gap is None


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=10**6),
       st.sets(st.integers(min_value=2, max_value=60), min_size=1, max_size=30))
def test_skip_gap_delivers_pending_in_order_and_moves_next_seq(head, offsets):
    state = loaded(head)
    for off in offsets:
        assert state.offer(head + off, item(head + off)) == []
    first = min(offsets)
    assert state.gap == (head + 1, head + first)
    out = state.skip_gap()
    run = 0
    while first + run + 1 in offsets:
        run += 1
    assert [s for s, _ in out] == list(range(head + first, head + first + run + 1))


def test_skip_gap_past_a_known_head():
    state = loaded(0)
    state.saw_head(4)
    assert state.skip_gap() == []
    assert state.head == 4 and state.gap is None


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=60),
       st.integers(min_value=1, max_value=30), st.integers(min_value=0, max_value=200))
def test_backlog_serves_exactly_what_a_position_lacks_or_defers_to_the_log(
        head, n, size, after):
    state = loaded(head, buffer_size=size)
    for seq in range(head + 1, head + n + 1):
        state.offer(seq, item(seq))
    backlog = state.backlog(after)
    if after >= state.head:
        assert backlog == []
    elif after + 1 < max(head + 1, head + n + 1 - size):
        assert backlog is None  # older than the buffer: the event log serves it
    else:
        assert backlog == [(s, item(s)) for s in range(after + 1, head + n + 1)]


def test_overflowing():
    state = loaded(0)
    for seq in range(2, MAX_PENDING + 2):
        state.offer(seq, "x")
    assert len(state.pending) == MAX_PENDING
    assert not state.overflowing()
    state.offer(MAX_PENDING + 5, "x")
    assert state.overflowing()
    assert len(state.skip_gap()) == MAX_PENDING
    assert not state.overflowing()


def test_seq_zero_and_below_is_never_ordered():
    state = loaded(0)
    assert state.offer(0, "typing") == []
    assert state.offer(-3, "bad") == []


def test_gateway_positions_a_from_now_answer_never_jumps_a_position():
    from gateway_server.positions import Positions

    p = Positions()
    assert p.answered("C1", 5, caught_up=False) == 0 and p.pos["C1"] == 5
    assert p.judge("C1", 6) == "deliver"
    # another owner's "from now" is ahead of events still on their way from the old one
    assert p.answered("C1", 9, caught_up=False) == 0 and p.pos["C1"] == 6
    assert [p.judge("C1", s) for s in (7, 7, 9, 10)] == ["deliver", "drop", "resync", "wait"]
    # after a catch-up from our position, a position ahead is a hole the log could not fill
    assert p.answered("C1", 12, caught_up=True) == 5 and p.pos["C1"] == 12
    assert "C1" not in p.syncing
