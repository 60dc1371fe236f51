"""Delivery under faults, measured from outside: RTM members that stay connected, a poster
at a steady rate, and a fault in the middle. Counts per member and channel what was lost,
duplicated and reordered against every post that answered ``ok``, and how long the fault
silenced the affected channels. Used by the fault tests, by `backchannel chaos` and (with
resuming members, ops/resumer.py) by `backchannel resume-bench`."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

Acked = dict[str, list[tuple[str, float]]]  # channel -> [(ts, when posted)]


@dataclasses.dataclass
class Member:
    token: str
    got: dict[str, list[tuple[str, float]]] = dataclasses.field(default_factory=dict)
    closed: str = ""
    # channel -> text -> times seen: checks delivery by content, independently of ts
    texts: dict[str, Counter[str]] = dataclasses.field(default_factory=dict)

    def record(self, event: dict[str, Any], prefix: str) -> bool:
        """Count a ``message`` event whose text starts with ``prefix``; True if counted."""
        text = event.get("text")
        if event.get("type") != "message" or not isinstance(text, str) \
                or not text.startswith(prefix):
            return False
        channel = str(event.get("channel"))
        self.got.setdefault(channel, []).append((str(event.get("ts")), time.monotonic()))
        self.texts.setdefault(channel, Counter())[text] += 1
        return True


@dataclasses.dataclass
class Report:
    acked: Acked
    members: list[Member]
    failed_posts: int
    fault_at: float | None
    posted: dict[str, set[str]] = dataclasses.field(default_factory=dict)  # channel -> texts

    def counts(self) -> dict[str, int]:
        lost = dup = reordered = delivered = 0
        for m in self.members:
            for channel, acks in self.acked.items():
                got = [ts for ts, _ in m.got.get(channel, [])]
                seen = set(got)
                lost += sum(1 for ts, _ in acks if ts not in seen)
                dup += len(got) - len(seen)
                reordered += sum(1 for a, b in zip(got, got[1:], strict=False) if b <= a)
                delivered += len(seen)
        return {"delivered": delivered, "lost": lost, "duplicated": dup,
                "reordered": reordered, "failed_posts": self.failed_posts}

    def text_counts(self) -> dict[str, int]:
        """Per member and channel, acked texts never seen and acked texts seen more than
        once: "every acked post, exactly once", by content."""
        missing = repeated = 0
        for m in self.members:
            for channel, texts in self.posted.items():
                seen = m.texts.get(channel, Counter())
                missing += sum(1 for t in texts if seen[t] == 0)
                repeated += sum(1 for t in texts if seen[t] > 1)
        return {"texts_missing": missing, "texts_repeated": repeated}

    def silence(self, channels: list[str]) -> float | None:
        """Seconds from the fault to the first delivery, on any of ``channels``, of a post
        made after the fault: how long they were dark."""
        if self.fault_at is None:
            return None
        after = {ts for c in channels for ts, at in self.acked.get(c, []) if at >= self.fault_at}
        firsts = [when for m in self.members for c in channels
                  for ts, when in m.got.get(c, []) if ts in after]
        return min(firsts) - self.fault_at if firsts else None

    def latencies(self) -> list[float]:
        """post -> receive, every member, every message."""
        posted = {ts: at for acks in self.acked.values() for ts, at in acks}
        return [when - posted[ts] for m in self.members for got in m.got.values()
                for ts, when in got if ts in posted]


@dataclasses.dataclass
class Poster:
    """Posts ``"<prefix> <i>"`` round-robin over channels; records every post that answered
    ok (ts and text) and counts the others."""

    http: httpx.AsyncClient
    api: str
    token: str
    channels: list[str]
    prefix: str = "load"
    acked: Acked = dataclasses.field(default_factory=dict)
    posted: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    failed: int = 0
    sent: int = 0

    async def post(self, i: int) -> None:
        channel = self.channels[i % len(self.channels)]
        text = f"{self.prefix} {i}"
        at = time.monotonic()
        try:
            body = (await self.http.post(self.api + "chat.postMessage", json={
                "channel": channel, "text": text},
                headers={"Authorization": f"Bearer {self.token}"})).json()
        except (httpx.HTTPError, ValueError):
            body = {}
        if body.get("ok"):
            self.acked.setdefault(channel, []).append((body["ts"], at))
            self.posted.setdefault(channel, set()).add(text)
        else:
            self.failed += 1

    async def run(self, rate: float, more: Callable[[int], bool]) -> None:
        """Post ``rate``/s while ``more(i)`` (i: posts started so far), each post in its own
        task so a slow answer does not slow the rate; returns once every post answered."""
        async with trio.open_nursery() as posters:
            start = trio.current_time()  # trio's clock, not time.monotonic(): another origin
            while more(self.sent):
                await trio.sleep_until(start + self.sent / rate)
                posters.start_soon(self.post, self.sent)
                self.sent += 1
        for acks in self.acked.values():
            acks.sort()

    def report(self, members: list[Member], fault_at: float | None = None) -> Report:
        acked = {c: self.acked.get(c, []) for c in self.channels}
        return Report(acked, members, self.failed, fault_at, self.posted)


async def _member(http: httpx.AsyncClient, api: str, member: Member, prefix: str,
                  ready: trio.Event, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    reply = (await http.post(api + "rtm.connect",
                             headers={"Authorization": f"Bearer {member.token}"})).json()
    if not reply.get("ok"):
        raise RuntimeError(f"rtm.connect failed: {reply.get('error')}")
    async with open_websocket_url(reply["url"], max_message_size=16 * 1024 * 1024) as ws:
        while json.loads(await ws.get_message()).get("type") != "hello":
            pass
        task_status.started()
        try:
            while True:
                member.record(json.loads(await ws.get_message()), prefix)
        except Exception as exc:  # noqa: BLE001 - a member that drops is reported, not fatal
            member.closed = type(exc).__name__


async def run(api: str, poster: str, members: list[str], channels: list[str], *,
              rate: float, seconds: float,
              fault: Callable[[], Awaitable[None]] | None = None, fault_after: float = 1.0,
              settle: float = 20.0, prefix: str = "load") -> Report:
    """Connect every member, post ``rate``/s round-robin over ``channels`` for ``seconds``,
    run ``fault`` after ``fault_after`` s, then wait (at most ``settle`` s) until every
    member has every acknowledged post."""
    crowd = [Member(t) for t in members]
    fault_at: list[float] = []
    async with httpx.AsyncClient(timeout=30) as http, trio.open_nursery() as nursery:
        for m in crowd:
            await nursery.start(_member, http, api, m, prefix, trio.Event())
        load = Poster(http, api, poster, channels, prefix)
        fault_done = trio.Event()

        async def faulter() -> None:
            try:
                await trio.sleep(fault_after)
                fault_at.append(time.monotonic())
                await fault()  # type: ignore[misc]
            finally:
                fault_done.set()

        if fault is not None:
            nursery.start_soon(faulter)
        else:
            fault_done.set()
        # posts go on for `seconds`, and for as long as the fault takes (a drain that
        # waits for subscriptions to move is measured under load from start to end)
        await load.run(rate, lambda i: i < rate * seconds or not fault_done.is_set())
        await settle_until_complete(crowd, load.acked, settle)
        nursery.cancel_scope.cancel()
    return load.report(crowd, fault_at[0] if fault_at else None)


async def settle_until_complete(members: list[Member], acked: Acked, settle: float) -> bool:
    """Wait (at most ``settle`` s) until every member has every acked post."""
    with trio.move_on_after(settle):
        while not all(complete(m, acked) for m in members):
            await trio.sleep(0.05)
        return True
    return False


def complete(member: Member, acked: Acked) -> bool:
    for channel, acks in acked.items():
        seen = {ts for ts, _ in member.got.get(channel, [])}
        if any(ts not in seen for ts, _ in acks):
            return False
    return True
