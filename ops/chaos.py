"""`backchannel chaos`: the ring's faults measured against a running cluster, through the
real path. RTM members stay connected while a poster posts at a steady rate, and each phase
injects one change: nothing (at rest), `ring add`, `ring drain`, then N rounds of kill -9
of a ring member (the ring manager must heal each; a fresh standby is started before every
kill so that the ring keeps its size). Every phase reports lost / duplicated / reordered per
member against every post that answered ok, and post->receive latency; kills also report
how long the dead member's channels were dark."""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from cluster.ring import Ring
from ops import cluster, loadcheck, ringops
from ops.errors import ClusterError
from ops.views import load_view


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def _summary(report: loadcheck.Report) -> dict[str, Any]:
    lat = report.latencies()
    return {**report.counts(), "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
            "max_ms": _pct(lat, 1.0)}


def _setup(run_dir: Path, members: int, rooms: int) -> tuple[str, list[str], list[str]]:
    """A workspace: a poster, ``members`` users, ``rooms`` channels everyone is in."""
    ws = cluster.seed(run_dir, members + 1, team_name="chaos")
    api = ws["webapp_url"]
    poster = ws["users"][0]["token"]
    channels = []
    with httpx.Client(timeout=30) as http:
        for i in range(rooms):
            reply = http.post(api + "conversations.create", json={"name": f"chaos-{i}"},
                              headers={"Authorization": f"Bearer {poster}"}).json()
            channels.append(reply["channel"]["id"])
            for user in ws["users"][1:]:
                http.post(api + "conversations.join", json={"channel": reply["channel"]["id"]},
                          headers={"Authorization": f"Bearer {user['token']}"})
    return poster, [u["token"] for u in ws["users"][1:]], channels


def run(run_dir: Path, kills: int, rate: float, members: int, rooms: int,
        seconds: float) -> dict[str, Any]:
    state = cluster.require_state(run_dir)
    if not any(p["role"] == "ring_manager" for p in state["processes"]):
        raise ClusterError("chaos needs a ring manager: start with `backchannel up` "
                           "(--ring-managers 1 is the default)")
    api = state["webapp_url"]
    poster, tokens, channels = _setup(run_dir, members, rooms)

    def phase(fault: Any = None, label: str = "load") -> loadcheck.Report:
        return trio.run(lambda: loadcheck.run(api, poster, tokens, channels, rate=rate,
                                              seconds=seconds, fault=fault, fault_after=1.0,
                                              prefix=label))

    doc: dict[str, Any] = {"rate": rate, "members": members, "rooms": rooms,
                           "seconds": seconds}
    doc["rest"] = _summary(phase(label="rest"))
    for op in ("add", "drain"):
        out: dict[str, Any] = {}

        async def change(op: str = op, out: dict[str, Any] = out) -> None:
            # the real CLI in its own process: in ours it would share the GIL with the
            # members whose receive times we are measuring
            name = [] if op == "add" else [doc["add"]["member"]]
            done = await trio.run_process(
                [sys.executable, "-m", "ops.cli", "--run-dir", str(run_dir), "ring", op,
                 *name, "--json"], capture_stdout=True, check=False)
            out.update(json.loads(done.stdout or b"{}"))
            if done.returncode != 0:
                raise ClusterError(f"ring {op} failed: {out.get('error')}")

        doc[op] = {**_summary(phase(change, op)),
                   **{k: out.get(k) for k in ("member", "predicted", "moved", "seconds")}}
    doc["kills"] = [_kill_round(run_dir, phase, channels, i) for i in range(kills)]
    dark = [k["dark_s"] for k in doc["kills"] if k["dark_s"] is not None]
    doc["failover_s"] = {"p50": round(statistics.median(dark), 3) if dark else None,
                         "max": round(max(dark), 3) if dark else None, "n": len(dark)}
    return doc


def _kill_round(run_dir: Path, phase: Any, channels: list[str], i: int) -> dict[str, Any]:
    view = load_view(run_dir)
    if not view.standby():
        ringops._start_channel(view, ringops.next_name(view), standby=True)
        view = load_view(run_dir)
    ring = Ring(view.config)
    owners = sorted({ring.process(c) for c in channels})
    victim = owners[i % len(owners)]
    dark = [c for c in channels if ring.process(c) == victim]
    entry = view.process(victim)
    if entry is None:
        raise ClusterError(f"{victim} was not started from {run_dir}")

    async def kill() -> None:
        os.kill(entry["pid"], signal.SIGKILL)

    report = phase(kill, f"kill{i}")
    deadline = time.monotonic() + 10
    while victim in {m.process for m in cluster.read_ring(view.settings).members.values()}:
        if time.monotonic() > deadline:
            raise ClusterError(f"the ring manager did not heal {victim} out of the ring")
        time.sleep(0.1)
    cluster.forget_process(run_dir, victim)
    silence = report.silence(dark)
    return {"victim": victim, "dark_channels": len(dark),
            "dark_s": round(silence, 3) if silence is not None else None,
            **_summary(report)}
