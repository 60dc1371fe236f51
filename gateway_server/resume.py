"""One resuming client's position on one stream: the pure part of replay, tested without
sockets (tests/test_resume_cursor.py).

A gateway delivers each stream's events in seq order, once, to all its clients at once. A
client that resumes from an older position needs the events between its position and the
gateway's first: those come from the channel server (recent buffer, else event log) a page
at a time, while the live ones that keep arriving for this client wait here. The client
sees its position's successor next, whichever source it came from, and nothing twice.

    live(seq)      a live event for this client
    next_fetch()   the range to ask the log for next, or None
    apply(items)   a fetched page arrived (possibly short, possibly empty)
    drain()        held live events that are now next in line
    settle()       the replay has queued all it was given: go live if nothing is missing
"""

from __future__ import annotations

import dataclasses
from collections import deque


class Overflow(Exception):
    """More live events held than allowed: the client is too far behind to keep."""


@dataclasses.dataclass
class Cursor:
    last: int  # the last seq this client has
    target: int = 0  # the gateway's position when the client said hello: fetch up to it
    max_held: int = 10_000
    fetching: bool = False
    held: deque[tuple[int, str]] = dataclasses.field(default_factory=deque)

    def __post_init__(self) -> None:
        self.fetching = self.next_fetch() is not None

    def live(self, seq: int, payload: str) -> tuple[str | None, bool]:
        """(payload to deliver now or None, whether a fetch must start)."""
        if seq <= self.last or self.held and seq <= self.held[-1][0]:
            return None, False
        if not self.fetching and not self.held and seq == self.last + 1:
            self.last = seq
            return payload, False
        self.held.append((seq, payload))
        if len(self.held) > self.max_held:
            raise Overflow
        start = not self.fetching
        self.fetching = True
        return None, start

    def next_fetch(self) -> tuple[int, int] | None:
        """(after, upto): what the log must supply before the next held event (or up to the
        target), or None when nothing is missing."""
        upper = self.held[0][0] - 1 if self.held else self.target
        return (self.last, upper) if upper > self.last else None

    def apply(self, items: list[tuple[int, str]]) -> tuple[list[str], int]:
        """Take a fetched page for ``next_fetch()``; returns the payloads to deliver, in
        order, and how many seqs the log could not supply (purged: they are skipped)."""
        wanted = self.next_fetch()
        if wanted is None:
            return self.drain(), 0
        items = [(s, p) for s, p in items if self.last < s <= wanted[1]]
        skipped = 0
        if not items or items[0][0] > self.last + 1:
            first = items[0][0] if items else wanted[1] + 1
            skipped = first - 1 - self.last
            self.last = first - 1
        out = []
        for seq, payload in items:
            if seq != self.last + 1:
                break  # a hole inside the page: the next fetch asks for it again
            out.append(payload)
            self.last = seq
        return out + self.drain(), skipped

    def drain(self) -> list[str]:
        """Held events that are next in line."""
        out = []
        while self.held and self.held[0][0] <= self.last + 1:
            seq, payload = self.held.popleft()
            if seq == self.last + 1:
                out.append(payload)
                self.last = seq
        return out

    def settle(self) -> bool:
        """End the replay if nothing is missing and nothing waits; live events then go
        straight through. Only the replay calls it, after it has queued everything
        ``apply``/``drain`` gave it: until then live events must keep waiting here, or
        one could overtake replayed events still on their way to the client's queue."""
        if not self.held and self.next_fetch() is None:
            self.fetching = False
        return not self.fetching
