"""Per-stream ordering: the pure part of the channel server, tested without sockets.

A stream starts at the first seq it sees (its baseline). After that an event is delivered
only when every lower seq has been, so gateways see each stream in seq order without
duplicates; early events wait in ``pending`` until the gap is filled (live or by repair).
Events below the baseline were never delivered by this server and are passed through.
"""

from __future__ import annotations

import dataclasses
from collections import deque

MAX_PENDING = 10_000


@dataclasses.dataclass
class StreamState:
    baseline: int | None = None
    next_seq: int = 0
    pending: dict[int, str] = dataclasses.field(default_factory=dict)
    recent: deque[tuple[int, str]] = dataclasses.field(default_factory=lambda: deque(maxlen=200))

    def offer(self, seq: int, item: str) -> list[tuple[int, str]]:
        """Take one event; return what may now be delivered, in order."""
        if self.baseline is None:
            self.baseline = self.next_seq = seq
        if seq < self.baseline:
            return [(seq, item)]
        if seq < self.next_seq or seq in self.pending:
            return []
        self.pending[seq] = item
        return self._drain()

    def _drain(self) -> list[tuple[int, str]]:
        ready = []
        while self.next_seq in self.pending:
            ready.append((self.next_seq, self.pending.pop(self.next_seq)))
            self.next_seq += 1
        self.recent.extend(ready)
        return ready

    @property
    def gap(self) -> tuple[int, int] | None:
        """(first missing seq, first pending seq) while events wait behind a gap."""
        if not self.pending:
            return None
        return self.next_seq, min(self.pending)

    def skip_gap(self) -> list[tuple[int, str]]:
        """Give up on the missing seqs (repair failed): deliver what waits, in order."""
        if self.pending:
            self.next_seq = min(self.pending)
        return self._drain()

    def overflowing(self) -> bool:
        return len(self.pending) > MAX_PENDING
