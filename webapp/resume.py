"""RTM resume on the webapp side (docs/rtm.md): ``rtm.connect`` checks the shape of
``resume`` and keeps it with the ticket; redeeming the ticket decides, per stream, where the
gateway replays from, and which streams fail and why.

Deciding at redeem rather than at ``rtm.connect`` means membership and heads are read when
the gateway is about to subscribe, not up to a ticket's lifetime earlier.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from webapp import store
from webapp.db import Database
from webapp.params import ApiError

MAX_STREAMS = 5000
MAX_KEY_LEN = 32
NO_ACCESS = "no_access"
TOO_OLD = "too_old"
INVALID_POSITION = "invalid_position"
# the membership start of a stream a client has no history in (the workspace's stream): a
# client that did not ask for it resumes it from its head, not from the team's first event
FROM_HEAD = -1


def parse(raw: Any) -> dict[str, Any] | None:
    """``resume`` as given (an object, or a JSON string holding one) -> stream -> position
    as sent; None when absent. Values are judged per stream later, so one bad position does
    not refuse the whole connect; a malformed map does."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:
            raise ApiError("invalid_arguments") from exc
    if not isinstance(raw, dict) or len(raw) > MAX_STREAMS:
        raise ApiError("invalid_arguments")
    if not all(isinstance(k, str) and 0 < len(k) <= MAX_KEY_LEN for k in raw):
        raise ApiError("invalid_arguments")
    # keep only what is a position at all; anything else is reported as invalid_position
    return {k: v if _is_seq(v) else None for k, v in raw.items()}


def _start(asked: dict[str, int | None], stream: str, joined: int) -> int | None:
    """The client's position, or the membership start for a stream it did not send."""
    return asked[stream] if stream in asked else joined


def _is_seq(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**62


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclasses.dataclass
class Plan:
    """Where each stream resumes from, and the streams that cannot."""

    start: dict[str, int] = dataclasses.field(default_factory=dict)
    failed: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def decide(asked: dict[str, int | None], readable: dict[str, int], heads: dict[str, int],
           oldest: dict[str, int]) -> Plan:
    """Pure: ``readable`` maps each stream the user may read now to its membership start;
    ``heads`` to its last seq; ``oldest`` to the oldest seq the log still has. A readable
    stream missing from ``asked`` resumes from its membership start (joined while away)."""
    plan = Plan()
    for stream in asked:
        if stream not in readable:
            plan.failed.append({"stream": stream, "reason": NO_ACCESS})
    for stream, joined in readable.items():
        at = _start(asked, stream, joined)
        head = heads.get(stream, 0)
        if at is None or at > head:
            plan.failed.append({"stream": stream, "reason": INVALID_POSITION})
        elif at < head and oldest.get(stream, head + 1) > at + 1:
            plan.failed.append({"stream": stream, "reason": TOO_OLD})
        else:
            plan.start[stream] = at
    return plan


Request = tuple[str, dict[str, int], dict[str, int | None]]  # user, memberships, asked


async def plan_many(db: Database, requests: dict[str, Request]) -> dict[str, Plan]:
    """``decide`` for many resumes (key -> (user, memberships, asked); a user may resume
    several sockets at once) with one read of the heads of every stream they can read, and
    one of the oldest logged seq of those a client is behind on (the only ones a purge can
    have made too old)."""
    readable = {key: {user: 0, **memberships}
                for key, (user, memberships, _) in requests.items()}
    streams = sorted({s for streams in readable.values() for s in streams})
    heads = await store.stream_heads(db, streams) if streams else {}
    for starts in readable.values():
        for stream, joined in starts.items():
            if joined == FROM_HEAD:
                starts[stream] = heads[stream]
    behind: set[str] = set()
    for key, (_, _, asked) in requests.items():
        for stream, joined in readable[key].items():
            at = _start(asked, stream, joined)
            if at is not None and at < heads[stream]:
                behind.add(stream)
    oldest = await store.oldest_events(db, sorted(behind)) if behind else {}
    return {key: decide(asked, readable[key], heads, oldest)
            for key, (_, _, asked) in requests.items()}
