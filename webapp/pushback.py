"""Pushback: streams whose fanout is behind, as the channel servers report them in their
acks (through the admin link), refused to posters for a moment.

Kept in process, not in Redis: a post would otherwise pay a Redis round trip to ask, on
every post. Each webapp learns from the answers to its own notifies: once HOLD_S has
passed, the next post to the stream goes through and its answer says whether the stream
is still behind, so with W webapps at most W posts per HOLD_S reach a stream that is.
"""

from __future__ import annotations

import time

from prometheus_client import Counter

from webapp.params import ApiError

HOLD_S = 1.0  # a stream reported behind is refused for this long (Retry-After)
MAX_TRACKED = 100_000
REFUSED = Counter("backchannel_webapp_pushback_refused_total",
                  "Posts refused because the stream's fanout is behind")
REPORTED = Counter("backchannel_webapp_pushback_reported_total",
                   "Streams reported behind by channel servers")


class Pushback:
    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.hold_s = hold_s
        self._until: dict[str, float] = {}

    def behind(self, streams: list[str]) -> None:
        now = time.monotonic()
        if len(self._until) + len(streams) > MAX_TRACKED:
            self._until = {s: t for s, t in self._until.items() if t > now}
        until = now + self.hold_s
        for stream in streams[:MAX_TRACKED]:
            self._until[stream] = until
        REPORTED.inc(len(streams))

    def check(self, stream: str) -> None:
        """Raise Slack's ratelimited (HTTP 429, Retry-After) while ``stream`` is behind:
        before any transaction, so a refused post writes nothing."""
        until = self._until.get(stream)
        if until is None:
            return
        if until <= time.monotonic():
            del self._until[stream]
            return
        REFUSED.inc()
        raise ApiError("ratelimited", status=429,
                       headers={"Retry-After": str(max(1, round(self.hold_s)))})
