"""Per-stream ordering and catch-up: the pure part of the channel server, tested without
sockets.

A stream's state starts *unloaded*: events that arrive wait in ``pending`` until the stream's
head (its last committed seq) is read from the event log. From then on ``next_seq`` is the
next seq to deliver live; every seq below it is committed, and a subscriber that is behind
is caught up from the recent buffer or the event log, by its position. So a new owner after
a ring change, or a restarted server, never takes the first seq it happens to see as its
baseline. Events are delivered only in seq order without duplicates; early ones wait in
``pending`` until the gap is filled, live or by repair. ``known_head`` (from periodic head
checks) reveals a lost *last* event on a quiet stream, which no later event would.
"""

from __future__ import annotations

import dataclasses
from collections import deque

MAX_PENDING = 10_000


@dataclasses.dataclass
class StreamState:
    buffer_size: int = 1000
    loaded: bool = False
    next_seq: int = 1
    known_head: int = 0
    pending: dict[int, str] = dataclasses.field(default_factory=dict)
    recent: deque[tuple[int, str]] = dataclasses.field(default_factory=deque)

    def __post_init__(self) -> None:
        self.recent = deque(self.recent, maxlen=self.buffer_size)

    @property
    def head(self) -> int:
        """The last seq delivered live (or committed before this server loaded the stream)."""
        return self.next_seq - 1

    def load(self, head: int) -> list[tuple[int, str]]:
        """The event log says ``head`` is committed: deliver from ``head + 1`` on."""
        if self.loaded:
            return []
        self.loaded = True
        self.next_seq = head + 1
        self.known_head = max(self.known_head, head)
        for seq in [s for s in self.pending if s < self.next_seq]:
            del self.pending[seq]
        return self._drain()

    def offer(self, seq: int, item: str) -> list[tuple[int, str]]:
        """Take one event; return what may now be delivered, in order."""
        if seq < self.next_seq and self.loaded or seq in self.pending or seq < 1:
            return []
        self.pending[seq] = item
        self.known_head = max(self.known_head, seq)
        return self._drain() if self.loaded else []

    def _drain(self) -> list[tuple[int, str]]:
        ready = []
        while self.next_seq in self.pending:
            ready.append((self.next_seq, self.pending.pop(self.next_seq)))
            self.next_seq += 1
        self.recent.extend(ready)
        return ready

    def saw_head(self, head: int) -> None:
        """A head check found ``head`` committed: if we are behind it, that is a gap."""
        self.known_head = max(self.known_head, head)

    @property
    def gap(self) -> tuple[int, int] | None:
        """(first missing seq, first seq past the gap) while events are known to be missing."""
        if not self.loaded:
            return None
        if self.pending:
            return self.next_seq, min(self.pending)
        if self.known_head >= self.next_seq:
            return self.next_seq, self.known_head + 1
        return None

    def skip_gap(self) -> list[tuple[int, str]]:
        """Give up on the missing seqs (repair failed): deliver what waits, in order."""
        gap = self.gap
        if gap is not None:
            self.next_seq = gap[1]
        return self._drain()

    def backlog(self, after: int) -> list[tuple[int, str]] | None:
        """What a subscriber at position ``after`` lacks, from the recent buffer: [] when it
        is up to date, None when the buffer does not reach back far enough (use the log)."""
        if after >= self.head:
            return []
        if not self.recent or self.recent[0][0] > after + 1:
            return None
        lacking = [(s, item) for s, item in self.recent if s > after]
        if [s for s, _ in lacking] != list(range(after + 1, self.head + 1)):
            return None  # a skipped hole in the buffer: let the log say what exists
        return lacking

    def overflowing(self) -> bool:
        return len(self.pending) > MAX_PENDING
