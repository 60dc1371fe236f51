"""Presence bookkeeping, pure and clock-injected so it is tested without sockets."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class GatewayReport:
    seen: float
    users: dict[str, int]


class PresenceState:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.gateways: dict[str, GatewayReport] = {}
        self.last_active: dict[str, float] = {}

    def sync(self, gateway: str, users: dict[str, int], now: float, wall: float) -> None:
        before = self.gateways.get(gateway)
        for user in users:
            if before is None or user not in before.users:
                self.last_active[user] = wall
        self.gateways[gateway] = GatewayReport(now, dict(users))

    def expire(self, now: float) -> list[str]:
        gone = [g for g, r in self.gateways.items() if now - r.seen > self.ttl_s]
        for gateway in gone:
            del self.gateways[gateway]
        return gone

    def connections(self, user: str, now: float) -> int:
        return sum(r.users.get(user, 0) for r in self.gateways.values()
                   if now - r.seen <= self.ttl_s)

    def lookup(self, user: str, now: float) -> dict[str, object]:
        count = self.connections(user, now)
        return {"user": user, "online": count > 0, "connection_count": count,
                "last_activity": int(self.last_active.get(user, 0))}
