"""The consistent-hash ring that maps a channel id (or a user's personal stream) to the
channel server that owns it. A thin layer over uhashring with 150 vnodes per member.

The ring configuration lives in Redis as one JSON document, written by `backchannel up`,
`backchannel ring ...` and the ring manager, and watched by admin servers, channel servers
and gateways::

    {"epoch": 7, "members": {"channel-1": {"url": "ws://..", "state": "active",
                                           "process": "channel-1"}, ...}}

A member is a *slot* on the ring: the slot name is what is hashed, so the ring manager can
replace a dead process with a standby by pointing the slot at the standby's process and
address, and exactly the dead process's streams move. Only ``active`` members own streams:
a ``joining`` member is linked to by everyone before it takes streams, and a ``draining``
member stays reachable (its links stay up) while its streams move away. The epoch grows on
every change; every internal frame carries the sender's epoch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from uhashring import HashRing

VNODES = 150
STATES = ("joining", "active", "draining")


@dataclasses.dataclass(frozen=True)
class Member:
    url: str
    state: str = "active"
    process: str = ""  # the channel server process serving this slot ("" = the slot name)

    def to_doc(self, slot: str) -> dict[str, str]:
        return {"url": self.url, "state": self.state, "process": self.process or slot}

    @classmethod
    def from_doc(cls, slot: str, doc: Any) -> Member:
        if isinstance(doc, str):  # the walking skeleton's format: slot -> url
            return cls(url=doc, process=slot)
        state = str(doc.get("state", "active"))
        if state not in STATES:
            raise ValueError(f"bad member state {state!r}")
        return cls(url=str(doc["url"]), state=state, process=str(doc.get("process") or slot))


@dataclasses.dataclass(frozen=True)
class RingConfig:
    epoch: int
    members: Mapping[str, Member]  # slot name -> member

    def __post_init__(self) -> None:
        members = {}
        for slot, m in self.members.items():
            m = m if isinstance(m, Member) else Member.from_doc(slot, m)
            members[slot] = m if m.process else dataclasses.replace(m, process=slot)
        object.__setattr__(self, "members", members)

    def to_json(self) -> str:
        return json.dumps({"epoch": self.epoch, "members": {
            slot: m.to_doc(slot) for slot, m in sorted(self.members.items())}})

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> RingConfig:
        if not raw:
            return cls(epoch=0, members={})
        doc = json.loads(raw)
        return cls(epoch=int(doc["epoch"]), members={
            slot: Member.from_doc(slot, m) for slot, m in doc["members"].items()})

    def with_members(self, members: Mapping[str, Member | str]) -> RingConfig:
        return RingConfig(epoch=self.epoch + 1, members=dict(members))

    def with_member(self, slot: str, member: Member) -> RingConfig:
        return self.with_members({**self.members, slot: member})

    def without(self, slot: str) -> RingConfig:
        return self.with_members({s: m for s, m in self.members.items() if s != slot})

    def with_state(self, slot: str, state: str) -> RingConfig:
        return self.with_member(slot, dataclasses.replace(self.members[slot], state=state))

    def urls(self) -> dict[str, str]:
        """slot -> address, for every member (joining and draining ones included)."""
        return {slot: m.url for slot, m in self.members.items()}

    def active(self) -> list[str]:
        return sorted(s for s, m in self.members.items() if m.state == "active")

    def slot_of(self, process: str) -> str | None:
        for slot, m in self.members.items():
            if (m.process or slot) == process:
                return slot
        return None


class Ring:
    """Owner lookup for one ring config. Immutable: a config change builds a new Ring."""

    def __init__(self, config: RingConfig) -> None:
        self.config = config
        nodes = {slot: {"vnodes": VNODES, "instance": config.members[slot].url}
                 for slot in config.active()}
        self._ring = HashRing(nodes=nodes, vnodes=VNODES) if nodes else None

    @property
    def epoch(self) -> int:
        return self.config.epoch

    def owner(self, stream_id: str) -> str:
        """Slot name of the active member that owns ``stream_id``."""
        if self._ring is None:
            raise LookupError("ring has no active members")
        return self._ring.get_node(stream_id)

    def address(self, slot: str) -> str:
        return self.config.members[slot].url

    def process(self, stream_id: str) -> str:
        """The channel server process serving ``stream_id`` now."""
        slot = self.owner(stream_id)
        return self.config.members[slot].process or slot

    def owners(self, stream_ids: Iterable[str]) -> dict[str, list[str]]:
        """Group stream ids by owning slot."""
        grouped: dict[str, list[str]] = {}
        for sid in stream_ids:
            grouped.setdefault(self.owner(sid), []).append(sid)
        return grouped


def moved(before: Ring, after: Ring, stream_ids: Iterable[str]) -> list[str]:
    """Stream ids whose serving process differs between two rings (`ring --dry-run`)."""
    def owner(ring: Ring, sid: str) -> str | None:
        try:
            return ring.process(sid)
        except LookupError:
            return None

    return [s for s in stream_ids if owner(before, s) != owner(after, s)]
