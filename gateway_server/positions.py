"""Per-stream positions at a gateway: the pure part of exactly-once, in-order delivery,
tested without sockets.

A gateway holds one subscription per stream for all its local clients, and remembers the
last seq it delivered. An item is delivered only if it is the next seq; a duplicate (a
catch-up overlapping live events, the old owner still sending after a ring change) is
dropped, and a gap asks the owner to catch us up from our position. While that catch-up is
on its way, items past the gap are dropped: the catch-up brings them again, in order.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

Verdict = Literal["deliver", "drop", "resync", "wait"]


@dataclasses.dataclass
class Positions:
    pos: dict[str, int] = dataclasses.field(default_factory=dict)
    syncing: set[str] = dataclasses.field(default_factory=set)

    def judge(self, stream: str, seq: object) -> Verdict:
        """What to do with an item: deliver it, drop it, or (first item past a gap) ask for
        a catch-up; further items past the gap ``wait`` for that catch-up."""
        if seq == 0:
            return "deliver"  # ephemeral (user_typing): not in the log, not ordered
        at = self.pos.get(stream)
        if type(seq) is not int or at is None or seq <= at:
            return "drop"
        if seq > at + 1:
            if stream in self.syncing:
                return "wait"
            self.syncing.add(stream)
            return "resync"
        self.pos[stream] = seq
        return "deliver"

    def answered(self, stream: str, seq: int, caught_up: bool = True) -> int:
        """The owner's answer to a subscribe. With a position sent (``caught_up``), it
        comes after the catch-up from that position, so its position is where we now
        stand, and running ahead of ours means the event log could not fill a gap: we go
        on from there and return how many seqs were skipped (normally 0). Without one
        ("from now") it only gives a first position: during a ring change another owner's
        "now" may be ahead of events still on their way to us from the old one."""
        self.syncing.discard(stream)
        at = self.pos.get(stream)
        if at is None:
            self.pos[stream] = seq
        elif caught_up and seq > at:
            self.pos[stream] = seq
            return seq - at
        return 0

    def resync_failed(self, stream: str) -> None:
        self.syncing.discard(stream)  # the next item past the gap asks again

    def forget(self, stream: str) -> None:
        self.pos.pop(stream, None)
        self.syncing.discard(stream)

    def of(self, streams: object) -> dict[str, int]:
        return {s: self.pos[s] for s in streams if s in self.pos}  # type: ignore[attr-defined]
