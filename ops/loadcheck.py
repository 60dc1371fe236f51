"""Delivery under faults, measured from outside: RTM members that stay connected, a poster
at a steady rate, and a fault in the middle. Counts per member and channel what was lost,
duplicated and reordered against every post that answered ``ok``, and how long the fault
silenced the affected channels. Used by the fault tests and by `backchannel chaos`."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url


@dataclasses.dataclass
class Member:
    token: str
    got: dict[str, list[tuple[str, float]]] = dataclasses.field(default_factory=dict)
    closed: str = ""


@dataclasses.dataclass
class Report:
    acked: dict[str, list[tuple[str, float]]]  # channel -> [(ts, when posted)]
    members: list[Member]
    failed_posts: int
    fault_at: float | None

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
                event = json.loads(await ws.get_message())
                if event.get("type") == "message" and str(event.get("text", "")).startswith(
                        prefix):
                    member.got.setdefault(event["channel"], []).append(
                        (event["ts"], time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - a member that drops is reported, not fatal
            member.closed = type(exc).__name__


async def run(api: str, poster: str, members: list[str], channels: list[str], *,
              rate: float, seconds: float,
              fault: Callable[[], Awaitable[None]] | None = None, fault_after: float = 1.0,
              settle: float = 20.0, prefix: str = "load") -> Report:
    """Connect every member, post ``rate``/s round-robin over ``channels`` for ``seconds``,
    run ``fault`` after ``fault_after`` s, then wait (at most ``settle`` s) until every
    member has every acknowledged post."""
    acked: dict[str, list[tuple[str, float]]] = {c: [] for c in channels}
    crowd = [Member(t) for t in members]
    failed = 0
    fault_at: list[float] = []
    async with httpx.AsyncClient(timeout=30) as http, trio.open_nursery() as nursery:
        for m in crowd:
            await nursery.start(_member, http, api, m, prefix, trio.Event())

        async def post(i: int) -> None:
            nonlocal failed
            channel = channels[i % len(channels)]
            at = time.monotonic()
            try:
                body = (await http.post(api + "chat.postMessage", json={
                    "channel": channel, "text": f"{prefix} {i}"},
                    headers={"Authorization": f"Bearer {poster}"})).json()
            except httpx.HTTPError:
                body = {}
            if body.get("ok"):
                acked[channel].append((body["ts"], at))
            else:
                failed += 1

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
        async with trio.open_nursery() as posters:
            start = trio.current_time()  # trio's clock, not time.monotonic(): another origin
            i = 0
            # posts go on for `seconds`, and for as long as the fault takes (a drain that
            # waits for subscriptions to move is measured under load from start to end)
            while i < rate * seconds or not fault_done.is_set():
                await trio.sleep_until(start + i / rate)
                posters.start_soon(post, i)
                i += 1
        for acks in acked.values():
            acks.sort()
        with trio.move_on_after(settle):
            while not all(_complete(m, acked) for m in crowd):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    return Report(acked, crowd, failed, fault_at[0] if fault_at else None)


def _complete(member: Member, acked: dict[str, list[tuple[str, float]]]) -> bool:
    for channel, acks in acked.items():
        seen = {ts for ts, _ in member.got.get(channel, [])}
        if any(ts not in seen for ts, _ in acks):
            return False
    return True
