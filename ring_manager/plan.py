"""What the ring manager decides, as pure functions of the ring, the live leases and the
time: tested without Redis or processes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cluster.ring import Member, RingConfig


@dataclasses.dataclass
class Liveness:
    """When each channel server process's lease runs out, as far as we have seen. Kept across
    reads, so a registry wiped by a Redis restart does not make every member look dead: the
    processes rewrite their leases long before the expiries remembered here pass."""

    grace_ms: int
    expiry: dict[str, int] = dataclasses.field(default_factory=dict)
    started_ms: int = 0

    def observe(self, leases: Mapping[str, Mapping[str, Any]]) -> None:
        for process, lease in leases.items():
            self.expiry[process] = max(self.expiry.get(process, 0), int(lease["expires"]))

    def dead(self, process: str, now_ms: int) -> bool:
        # a process never seen gets one TTL from our start before it counts as dead
        return now_ms > self.expiry.get(process, self.started_ms + self.grace_ms)


def heal(config: RingConfig, leases: Mapping[str, Mapping[str, Any]], live: Liveness,
         now_ms: int) -> tuple[RingConfig, list[str]] | None:
    """The ring with every dead member replaced by a standby (an active member only) or
    removed, and members whose process came back at another address updated; None if
    nothing needs to change. Returns the actions taken, for the log."""
    members = dict(config.members)
    serving = {m.process for m in members.values()}
    # only processes offered as spares: one `ring add` has just started is not one
    standby = sorted(p for p, lease in leases.items()
                     if p not in serving and lease.get("standby") is True)
    actions: list[str] = []
    for slot, m in sorted(config.members.items()):
        lease = leases.get(m.process)
        if live.dead(m.process, now_ms) and lease is None:
            if m.state == "active" and standby:
                spare = standby.pop(0)
                members[slot] = Member(url=leases[spare]["url"], state="active",
                                       process=spare)
                actions.append(f"replace {slot}: {m.process} -> {spare}")
            else:
                del members[slot]
                actions.append(f"remove {slot} ({m.process})")
        elif lease is not None and lease["url"] != m.url:
            members[slot] = dataclasses.replace(m, url=lease["url"])
            actions.append(f"readdress {slot}")
    if not actions:
        return None
    return config.with_members(members), actions


def rebuild(leases: Mapping[str, Mapping[str, Any]], floor_epoch: int) -> RingConfig | None:
    """A ring Redis lost, from what the live channel servers say they serve; None if none
    says. The epoch goes past every epoch seen, since watchers ignore a lower one."""
    members: dict[str, Member] = {}
    epoch = floor_epoch
    for process, lease in sorted(leases.items()):
        slot = lease.get("slot")
        if isinstance(slot, str) and slot:
            members[slot] = Member(url=lease["url"], state="active", process=process)
        if isinstance(lease.get("epoch"), int):
            epoch = max(epoch, lease["epoch"])
    if not members:
        return None
    return RingConfig(epoch=epoch + 1, members=members)
