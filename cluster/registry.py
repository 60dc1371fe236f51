"""Service discovery through Redis: each process holds a *lease* on its entry.

Key ``<prefix>registry:<role>`` is a hash of process name -> JSON
``{"url":..,"pid":..,"expires":<unix ms>, ...}``. A live process rewrites its entry every
``lease_ttl_s / 4``; readers ignore entries whose ``expires`` has passed, so a process killed
with -9 disappears from discovery within one TTL, and entries wiped by a Redis restart come
back within one heartbeat. The ring (which channel server owns what) is separate: see
:mod:`cluster.ring`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

ROLES = ("webapp", "admin_server", "channel_server", "gateway_server", "presence_server",
         "ring_manager")


def registry_key(prefix: str, role: str) -> str:
    return f"{prefix}registry:{role}"


def ring_key(prefix: str) -> str:
    return f"{prefix}ring"


def leader_key(prefix: str) -> str:
    return f"{prefix}ring_manager:leader"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def entry(url: str, ttl_s: float, **extra: Any) -> str:
    return json.dumps({"url": url, "pid": os.getpid(),
                       "expires": now_ms() + int(ttl_s * 1000), **extra})


def live(raw: dict, at_ms: int | None = None) -> dict[str, dict[str, Any]]:
    """Decode a registry hash (bytes or str, as redis returns it) into name -> entry, keeping
    only unexpired leases. Malformed entries are skipped, never fatal."""
    at_ms = now_ms() if at_ms is None else at_ms
    out: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        name = name.decode() if isinstance(name, bytes) else name
        try:
            doc = json.loads(value)
            expires = doc.get("expires")
            if not isinstance(doc.get("url"), str) or not isinstance(expires, int):
                continue
        except (ValueError, AttributeError):
            continue
        if expires > at_ms:
            out[name] = doc
    return dict(sorted(out.items()))


def urls(raw: dict, at_ms: int | None = None) -> dict[str, str]:
    """name -> url of every live lease."""
    return {name: doc["url"] for name, doc in live(raw, at_ms).items()}


def recently_renewed(raw: dict, ttl_s: float, at_ms: int | None = None) -> dict[str, str]:
    """name -> url of leases renewed within the last half TTL (two missed renewals at most),
    or, if none is, of every live lease. A process killed with -9 keeps a live lease for up
    to one TTL; handing out only the recently renewed ones roughly halves the time during
    which new clients are sent to a dead gateway."""
    at_ms = now_ms() if at_ms is None else at_ms
    alive = live(raw, at_ms)
    half = int(ttl_s * 1000) // 2
    recent = {name: doc["url"] for name, doc in alive.items() if doc["expires"] - at_ms > half}
    return recent or {name: doc["url"] for name, doc in alive.items()}
