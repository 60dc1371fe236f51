"""`backchannel bench`: post->receive latency and post throughput against the running
cluster, through the real path (HTTP posts, an RTM WebSocket receiver)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from ops import cluster

CONCURRENCY = 8


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _bench(base: str, ws: dict[str, Any], messages: int) -> dict[str, Any]:
    sender, receiver = ws["users"][0]["token"], ws["users"][1]["token"]
    channel = ws["channels"][0]["id"]
    headers = {"Authorization": f"Bearer {sender}"}
    async with httpx.AsyncClient(timeout=30) as http:
        url = (await http.post(base + "rtm.connect",
                               headers={"Authorization": f"Bearer {receiver}"})).json()["url"]
        async with open_websocket_url(url) as sock:
            while json.loads(await sock.get_message())["type"] != "hello":
                pass
            latencies, after_reply = [], []
            started = time.perf_counter()
            for i in range(messages):
                t0 = time.perf_counter()
                reply = (await http.post(base + "chat.postMessage", headers=headers,
                                         json={"channel": channel, "text": f"bench {i}"})).json()
                t_reply = time.perf_counter()
                while True:
                    event = json.loads(await sock.get_message())
                    if event.get("type") == "message" and event.get("ts") == reply["ts"]:
                        break
                now = time.perf_counter()
                latencies.append((now - t0) * 1000)
                after_reply.append((now - t_reply) * 1000)
            sequential = messages / (time.perf_counter() - started)

            async def worker(n: int) -> None:
                for i in range(n):
                    await http.post(base + "chat.postMessage", headers=headers,
                                    json={"channel": channel, "text": f"burst {i}"})

            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(CONCURRENCY):
                    nursery.start_soon(worker, messages // CONCURRENCY)
            concurrent = (messages // CONCURRENCY * CONCURRENCY) / (time.perf_counter() - started)
    return {
        "messages": messages,
        "post_to_receive_ms_p50": round(statistics.median(latencies), 2),
        "post_to_receive_ms_p99": round(pct(latencies, 0.99), 2),
        "post_to_receive_ms_max": round(max(latencies), 2),
        "reply_to_receive_ms_p50": round(statistics.median(after_reply), 2),
        "posts_per_s_one_client_sequential": round(sequential, 1),
        f"posts_per_s_one_client_{CONCURRENCY}_in_flight": round(concurrent, 1),
    }


def run(run_dir: Path, messages: int) -> dict[str, Any]:
    ws = cluster.seed(run_dir, 2, team_name="bench")
    return trio.run(_bench, ws["webapp_url"], ws, messages)
