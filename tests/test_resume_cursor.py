"""The replay/live boundary of RTM resume (gateway_server/resume.py), as a property: however
live events and replay pages interleave, a resuming client gets every event after its
position exactly once, in order; only events the log no longer has are skipped, and
every skip is reported."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_server.resume import Cursor, Overflow


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    head = draw(st.integers(0, 60))  # the gateway's position at hello
    start = draw(st.integers(0, head + 5))  # the client's (may be ahead of a lagging gateway)
    oldest = draw(st.integers(1, head + 1))  # the log was purged below this seq
    more = draw(st.integers(0, 40))  # live events after hello
    page = draw(st.integers(1, 7))
    # the schedule: which of "a live event arrives", "the replay asks for a page", "the
    # page comes back", "the replay queues one event" happens next, as the gateway's
    # tasks interleave (queueing a replayed event can wait for room in the client's queue)
    steps = draw(st.lists(st.sampled_from(["live", "ask", "answer", "queue"]), max_size=300))
    return {"head": head, "start": start, "oldest": oldest, "more": more, "page": page,
            "steps": steps}


def payload(seq: int) -> str:
    return f"e{seq}"


def seq_of(text: str) -> int:
    return int(text[1:])


class Gateway:
    """The gateway's glue around one cursor, as gateway_server/server.py does it: live
    events go to the client's queue at once; replayed ones one at a time, with a wait
    (for room in the queue) before each."""

    def __init__(self, s: dict) -> None:
        self.s = s
        self.cursor = Cursor(s["start"], s["head"])
        self.next_live = s["head"] + 1
        self.last_live = s["head"] + s["more"]
        self.asked: tuple[int, int] | None = None
        self.queueing: list[str] = []  # replayed, not yet in the client's queue
        self.got: list[int] = []  # the client's queue
        self.skipped = 0
        self.replaying = self.cursor.fetching

    def live(self) -> None:
        if self.next_live > self.last_live:
            return
        now, fetch = self.cursor.live(self.next_live, payload(self.next_live))
        self.next_live += 1
        if now is not None:
            self.got.append(seq_of(now))
        if fetch:
            self.replaying = True

    def queue(self) -> None:
        if self.queueing:
            self.got.append(seq_of(self.queueing.pop(0)))

    def ask(self) -> None:
        if not self.replaying or self.asked is not None or self.queueing:
            return
        wanted = self.cursor.next_fetch()
        if wanted is None:
            out = self.cursor.drain()
            if out:
                self.queueing += out
            elif self.cursor.settle():
                self.replaying = False
        else:
            self.asked = wanted

    def answer(self) -> None:
        if self.asked is None:
            return
        after, upto = self.asked
        # the log has every committed seq from `oldest` on; live ones are committed too
        have = [q for q in range(max(after + 1, self.s["oldest"]), upto + 1)]
        out, skipped = self.cursor.apply([(q, payload(q)) for q in have[:self.s["page"]]])
        self.queueing += out
        self.skipped += skipped
        self.asked = None

    def finish(self) -> None:
        for _ in range(10_000):
            if (self.next_live > self.last_live and not self.replaying
                    and self.asked is None and not self.queueing):
                return
            self.live()
            self.queue()
            self.ask()
            self.answer()
        raise AssertionError("replay never finished")


@settings(max_examples=500, deadline=None)
@given(scenarios())
def test_every_event_after_the_position_exactly_once_in_order(s):
    gw = Gateway(s)
    for step in s["steps"]:
        getattr(gw, step)()
    gw.finish()
    end = s["head"] + s["more"]
    first = s["start"] + 1
    if s["start"] < s["head"]:
        first = max(first, s["oldest"])  # purged events cannot be replayed
    assert gw.got == list(range(first, end + 1))
    assert gw.skipped == first - (s["start"] + 1)
    assert not gw.cursor.fetching and not gw.cursor.held


def test_a_client_ahead_of_a_lagging_gateway_gets_no_duplicates():
    cursor = Cursor(last=12, target=10)
    assert not cursor.fetching
    assert cursor.live(11, "e11") == (None, False)
    assert cursor.live(12, "e12") == (None, False)
    assert cursor.live(13, "e13") == ("e13", False)


def test_live_events_wait_while_the_replay_fills_the_gap():
    cursor = Cursor(last=3, target=6)
    assert cursor.fetching and cursor.next_fetch() == (3, 6)
    assert cursor.live(7, "e7") == (None, False)  # held: the replay is already running
    out, skipped = cursor.apply([(4, "e4"), (5, "e5")])  # a short page
    assert (out, skipped) == (["e4", "e5"], 0)
    assert cursor.next_fetch() == (5, 6)
    assert cursor.apply([(6, "e6")]) == (["e6", "e7"], 0)
    assert cursor.fetching  # until the replay has queued e6 and e7 and says so
    assert cursor.live(8, "e8") == (None, False)
    assert cursor.drain() == ["e8"]
    assert cursor.settle() and not cursor.fetching
    assert cursor.live(9, "e9") == ("e9", False)


def test_too_many_held_live_events_overflow():
    cursor = Cursor(last=0, target=5, max_held=3)
    for seq in (6, 7, 8):
        cursor.live(seq, payload(seq))
    with pytest.raises(Overflow):
        cursor.live(9, "e9")
