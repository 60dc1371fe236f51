"""The consistent-hash ring that maps a channel id (or a user's personal stream) to the
channel server that owns it. A thin layer over uhashring with 150 vnodes per server.

The ring configuration (members with their addresses, and an epoch that grows on every
change) lives in Redis as one JSON document, written by `backchannel up` / `backchannel ring`
and watched by admin servers, channel servers and gateways.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping

from uhashring import HashRing

VNODES = 150


@dataclasses.dataclass(frozen=True)
class RingConfig:
    epoch: int
    members: Mapping[str, str]  # channel server name -> its ws:// address

    def to_json(self) -> str:
        return json.dumps({"epoch": self.epoch, "members": dict(sorted(self.members.items()))})

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> RingConfig:
        if not raw:
            return cls(epoch=0, members={})
        doc = json.loads(raw)
        return cls(epoch=int(doc["epoch"]), members=dict(doc["members"]))

    def with_members(self, members: Mapping[str, str]) -> RingConfig:
        return RingConfig(epoch=self.epoch + 1, members=dict(members))


class Ring:
    """Owner lookup for one ring config. Immutable: a config change builds a new Ring."""

    def __init__(self, config: RingConfig) -> None:
        self.config = config
        nodes = {name: {"vnodes": VNODES, "instance": addr}
                 for name, addr in config.members.items()}
        self._ring = HashRing(nodes=nodes, vnodes=VNODES) if nodes else None

    @property
    def epoch(self) -> int:
        return self.config.epoch

    def owner(self, stream_id: str) -> str:
        """Name of the channel server that owns ``stream_id``."""
        if self._ring is None:
            raise LookupError("ring has no members")
        return self._ring.get_node(stream_id)

    def address(self, name: str) -> str:
        return self.config.members[name]

    def owners(self, stream_ids: Iterable[str]) -> dict[str, list[str]]:
        """Group stream ids by owning server."""
        grouped: dict[str, list[str]] = {}
        for sid in stream_ids:
            grouped.setdefault(self.owner(sid), []).append(sid)
        return grouped


def moved(before: Ring, after: Ring, stream_ids: Iterable[str]) -> list[str]:
    """Stream ids whose owner differs between two rings (for `ring --dry-run`)."""
    return [s for s in stream_ids if before.owner(s) != after.owner(s)]
