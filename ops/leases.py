"""Read the registry's live leases (see cluster/registry.py) from outside the cluster."""

from __future__ import annotations

from typing import Any

import redis

from cluster import registry
from cluster.settings import Settings

Leases = dict[str, dict[str, dict[str, Any]]]  # role -> process name -> lease entry


def live_leases(settings: Settings) -> Leases:
    """Every unexpired lease under the settings' prefix, by role. Raises redis.RedisError."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    try:
        with client.pipeline(transaction=False) as pipe:
            for role in registry.ROLES:
                pipe.hgetall(registry.registry_key(settings.redis_prefix, role))
            raws = pipe.execute()
    finally:
        client.close()
    return {role: registry.live(raw) for role, raw in zip(registry.ROLES, raws, strict=True)}


def describe(role: str, name: str, entry: dict[str, Any]) -> str:
    return f"{name} ({role}, pid {entry.get('pid')}, {entry.get('url')})"
