"""Service discovery through Redis: each process registers its address under its role.

Key ``<prefix>registry:<role>`` is a hash of process name -> JSON ``{"url":..,"pid":..}``.
The ring (which channel server owns what) is separate: see :mod:`cluster.ring`.
"""

from __future__ import annotations

import json
import os

ROLES = ("webapp", "admin_server", "channel_server", "gateway_server", "presence_server")


def registry_key(prefix: str, role: str) -> str:
    return f"{prefix}registry:{role}"


def ring_key(prefix: str) -> str:
    return f"{prefix}ring"


def entry(url: str) -> str:
    return json.dumps({"url": url, "pid": os.getpid()})


def urls(raw: dict) -> dict[str, str]:
    """Decode a registry hash as returned by redis (bytes or str) into name -> url."""
    out = {}
    for name, value in raw.items():
        name = name.decode() if isinstance(name, bytes) else name
        out[name] = json.loads(value)["url"]
    return dict(sorted(out.items()))
