"""`backchannel bench`: post->receive latency (to every connected member) and post
throughput against the running cluster, through the real path: HTTP posts from one client,
RTM WebSocket receivers spread over the gateways by rtm.connect."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from ops import cluster

CONCURRENCY = 8


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Receivers:
    """Every receiver records when each message ts reached it."""

    def __init__(self, count: int) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.count = count
        self.complete: dict[str, trio.Event] = {}

    def expect(self, ts: str) -> trio.Event:
        return self.complete.setdefault(ts, trio.Event())

    async def listen(self, sock: WebSocketConnection) -> None:
        while True:
            event = json.loads(await sock.get_message())
            if event.get("type") != "message" or not event.get("text", "").startswith("bench"):
                continue
            got = self.arrivals.setdefault(event["ts"], [])
            got.append(time.perf_counter())
            if len(got) == self.count:
                self.expect(event["ts"]).set()


async def _connect(http: httpx.AsyncClient, base: str, token: str, nursery: trio.Nursery,
                   receivers: Receivers) -> None:
    reply = (await http.post(base + "rtm.connect",
                             headers={"Authorization": f"Bearer {token}"})).json()
    sock = await nursery.start(_open, reply["url"])
    while json.loads(await sock.get_message())["type"] != "hello":
        pass
    nursery.start_soon(receivers.listen, sock)


async def _open(url: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with open_websocket_url(url) as sock:
        task_status.started(sock)
        await trio.sleep_forever()


async def _bench(base: str, ws: dict[str, Any], messages: int) -> dict[str, Any]:
    sender, listeners = ws["users"][0]["token"], ws["users"][1:]
    channel = ws["channels"][0]["id"]
    headers = {"Authorization": f"Bearer {sender}"}
    receivers = Receivers(len(listeners))
    async with httpx.AsyncClient(timeout=30) as http, trio.open_nursery() as nursery:
        for user in listeners:
            await _connect(http, base, user["token"], nursery, receivers)
        to_all, to_first = [], []
        started = time.perf_counter()
        for i in range(messages):
            t0 = time.perf_counter()
            reply = (await http.post(base + "chat.postMessage", headers=headers,
                                     json={"channel": channel, "text": f"bench {i}"})).json()
            with trio.fail_after(10):
                await receivers.expect(reply["ts"]).wait()
            got = receivers.arrivals[reply["ts"]]
            to_first.append((min(got) - t0) * 1000)
            to_all.append((max(got) - t0) * 1000)
        sequential = messages / (time.perf_counter() - started)

        async def worker(n: int) -> None:
            for i in range(n):
                await http.post(base + "chat.postMessage", headers=headers,
                                json={"channel": channel, "text": f"burst {i}"})

        started = time.perf_counter()
        async with trio.open_nursery() as burst:
            for _ in range(CONCURRENCY):
                burst.start_soon(worker, messages // CONCURRENCY)
        concurrent = (messages // CONCURRENCY * CONCURRENCY) / (time.perf_counter() - started)
        nursery.cancel_scope.cancel()
    return {
        "messages": messages,
        "receivers": len(listeners),
        "post_to_first_receiver_ms_p50": round(statistics.median(to_first), 2),
        "post_to_every_receiver_ms_p50": round(statistics.median(to_all), 2),
        "post_to_every_receiver_ms_p99": round(pct(to_all, 0.99), 2),
        "post_to_every_receiver_ms_max": round(max(to_all), 2),
        "posts_per_s_one_client_sequential": round(sequential, 1),
        f"posts_per_s_one_client_{CONCURRENCY}_in_flight": round(concurrent, 1),
    }


def run(run_dir: Path, messages: int, receivers: int = 1) -> dict[str, Any]:
    """Latency is measured from just before the POST until the message reached the first /
    every receiver: it includes the HTTP round trip and the commit."""
    ws = cluster.seed(run_dir, receivers + 1, team_name="bench")
    return trio.run(_bench, ws["webapp_url"], ws, messages)
