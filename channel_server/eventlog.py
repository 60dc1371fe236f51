"""The channel server's reads of the durable event log, through the webapp's internal
endpoints: stream heads (batched) and the events of a stream between two positions."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from cluster import service
from cluster.settings import Settings

log = logging.getLogger(__name__)
HEADS_CHUNK = 5000
EVENTS_PAGE = 1000


class EventLogUnavailable(OSError):
    """No webapp answered: the caller retries later; nothing is skipped because of it."""


class EventLog:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self.discovery = service.Discovery(settings)

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"x-backchannel-internal": self.settings.internal_secret}
        for url in (await self.discovery.lookup("webapp")).values():
            try:
                resp = await self.http.request(method, url + path, headers=headers, **kwargs)
                body = resp.json()
                if resp.status_code == 200 and body.get("ok"):
                    return body
                log.warning("event log %s answered %d", path, resp.status_code)
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("event log %s failed: %s", path, type(exc).__name__)
        self.discovery.forget("webapp")
        raise EventLogUnavailable(path)

    async def heads(self, streams: list[str]) -> dict[str, int]:
        """stream -> last committed seq (0 if none)."""
        heads: dict[str, int] = {}
        for start in range(0, len(streams), HEADS_CHUNK):
            chunk = streams[start:start + HEADS_CHUNK]
            body = await self._call("POST", "/internal/heads", json={"streams": chunk})
            asked = set(chunk)  # once: per item it made every head check quadratic
            heads.update({s: int(q) for s, q in body["heads"].items() if s in asked})
        return heads

    async def fetch(self, stream: str, after: int, upto: int) -> list[tuple[int, dict]]:
        """Events with ``after < seq <= upto``, in order, paging through the log."""
        out: list[tuple[int, dict]] = []
        while after < upto:
            body = await self._call("GET", "/internal/events", params={
                "stream": stream, "after_seq": after, "limit": min(upto - after, EVENTS_PAGE)})
            page = [(int(e["seq"]), e["event"]) for e in body["events"] if e["seq"] <= upto]
            if not page:
                break
            out += page
            after = page[-1][0]
        return out
