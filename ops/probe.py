"""Small HTTP probes of a running process: its /health and a channel server's /streams."""

from __future__ import annotations

from typing import Any

import httpx

INTERNAL_HEADER = "x-backchannel-internal"


def get_json(url: str, headers: dict[str, str] | None = None,
             timeout: float = 2.0) -> dict[str, Any] | None:
    """The JSON body of a 200 answer, or None: a probe never raises for a dead peer."""
    try:
        resp = httpx.get(url, headers=headers, timeout=timeout)
        doc = resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def health(http_url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    return get_json(http_url.rstrip("/") + "/health", timeout=timeout)


def streams(http_url: str, secret: str) -> dict[str, int] | None:
    """stream id -> number of gateways subscribed to it at this channel server."""
    doc = get_json(http_url.rstrip("/") + "/streams", {INTERNAL_HEADER: secret})
    if doc is None or not isinstance(doc.get("streams"), dict):
        return None
    return {str(s): int(n) for s, n in doc["streams"].items()}


def subscriptions(http_url: str) -> int | None:
    doc = health(http_url)
    value = doc.get("subscriptions") if doc else None
    return value if isinstance(value, int) else None
