"""Read-only views of a running cluster: the documents behind `status` and `ring show`."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from cluster.ring import VNODES, Ring, RingConfig
from cluster.settings import Settings
from ops import probe
from ops.cluster import alive, read_ring, require_state, run_settings
from ops.errors import ClusterError
from ops.leases import Leases, live_leases

SHARE_SAMPLES = 20_000


@dataclasses.dataclass
class View:
    """One reading of the run dir, the ring and the registry, for one command."""

    run_dir: Path
    state: dict[str, Any]
    settings: Settings
    config: RingConfig
    leases: Leases

    def process(self, name: str) -> dict[str, Any] | None:
        """The cluster.json entry of a process started from this run dir."""
        return next((p for p in self.state["processes"] if p["name"] == name), None)

    def http_url(self, process: str) -> str | None:
        entry = self.process(process) or self.leases.get("channel_server", {}).get(process)
        return entry.get("http_url") if entry else None

    def alive(self, process: str) -> bool:
        """A channel server is alive while its registry lease is."""
        return process in self.leases.get("channel_server", {})

    def standby(self) -> list[str]:
        serving = {m.process for m in self.config.members.values()}
        return sorted(p for p, lease in self.leases.get("channel_server", {}).items()
                      if p not in serving and lease.get("standby") is True)

    def member_streams(self, slot: str) -> dict[str, int] | None:
        """stream -> subscribed gateways at the process serving ``slot`` (None: unreadable)."""
        url = self.http_url(self.config.members[slot].process)
        return probe.streams(url, self.settings.internal_secret) if url else None

    def live_streams(self) -> tuple[dict[str, int], list[str]]:
        """Every stream some member holds, with its subscriptions; and the slots that
        could not be asked (dead, or no /streams)."""
        found: dict[str, int] = {}
        unreadable = []
        for slot in sorted(self.config.members):
            held = self.member_streams(slot)
            if held is None:
                unreadable.append(slot)
                continue
            for stream, subs in held.items():
                # mid-move a stream can be listed twice; count its subscribers once
                found[stream] = max(found.get(stream, 0), subs)
        return found, unreadable


def load_view(run_dir: Path) -> View:
    state = require_state(run_dir)
    settings = run_settings(state)
    try:
        config, leases = read_ring(settings), live_leases(settings)
    except redis.RedisError as exc:
        raise ClusterError(f"cannot reach Redis at {settings.redis_url}: {exc}") from None
    return View(run_dir, state, settings, config, leases)


def shares(config: RingConfig) -> dict[str, float]:
    """Each member's share of a sample of stream ids (0 for members that own nothing)."""
    counts: Counter[str] = Counter()
    if config.active():
        ring = Ring(config)
        counts.update(ring.owner(f"C{i:09d}") for i in range(SHARE_SAMPLES))
    return {slot: round(counts[slot] / SHARE_SAMPLES, 4) for slot in config.members}


def ring_doc(view: View) -> dict[str, Any]:
    share = shares(view.config)
    members = []
    for slot, m in sorted(view.config.members.items()):
        held = view.member_streams(slot)
        members.append({
            "name": slot, "process": m.process, "state": m.state, "address": m.url,
            "alive": view.alive(m.process), "share": share[slot],
            "streams": None if held is None else len(held),
            "subscriptions": None if held is None else sum(held.values())})
    return {"epoch": view.config.epoch, "vnodes": VNODES, "members": members,
            "standby": view.standby()}


def ring_text(doc: dict[str, Any]) -> str:
    lines = [f"ring epoch {doc['epoch']}, {doc['vnodes']} vnodes per member"]
    for m in doc["members"]:
        held = ("?" if m["streams"] is None
                else f"{m['streams']} streams / {m['subscriptions']} subs")
        lines.append(f"  {m['name']:<12} {m['process']:<12} {m['state']:<9} "
                     f"{'alive' if m['alive'] else 'DEAD':<6} {m['address']:<26} "
                     f"{m['share']:>6.1%} of streams  {held}")
    if not doc["members"]:
        lines.append("  (no members)")
    lines.append(f"standby: {', '.join(doc['standby']) or '-'}")
    return "\n".join(lines)


def status(run_dir: Path) -> dict[str, Any] | None:
    """The `status --json` document, or None when nothing runs from ``run_dir``."""
    try:
        state = require_state(run_dir)
    except ClusterError:
        return None
    settings = run_settings(state)
    processes = [_process_status(p) for p in state["processes"]]
    # a drained gateway exits on purpose: gone is what it should be
    problems = [f"process {p['name']} ({p['role']}, pid {p['pid']}) is down"
                for p in processes if not p["healthy"] and not p["draining"]]
    try:
        config, leases = read_ring(settings), live_leases(settings)
    except redis.RedisError:
        ring: dict[str, Any] = {"epoch": None, "members": [], "detail": {},
                                "error": "redis unreachable"}
        problems.append(f"Redis unreachable at {settings.redis_url}")
    else:
        ring, ring_problems = _ring_status(config, leases)
        problems += ring_problems
    return {"webapp_url": state["webapp_url"], "processes": processes, "ring": ring,
            "healthy": not problems, "problems": problems}


def _process_status(entry: dict[str, Any]) -> dict[str, Any]:
    """``draining``: a gateway that reports it, or one `gateway drain` asked to drain (the
    record is marked) that has not been forgotten yet."""
    health = probe.health(entry["http_url"]) if alive(entry["pid"]) else None
    draining = entry.get("draining") is True or bool(health and health.get("draining") is True)
    return {"name": entry["name"], "role": entry["role"], "pid": entry["pid"],
            "address": entry["url"], "healthy": health is not None, "draining": draining}


def _ring_status(config: RingConfig, leases: Leases) -> tuple[dict[str, Any], list[str]]:
    live = leases.get("channel_server", {})
    detail = {slot: {"state": m.state, "process": m.process, "url": m.url,
                     "alive": m.process in live}
              for slot, m in sorted(config.members.items())}
    problems = [f"ring member {slot} (process {d['process']}) has no live lease"
                for slot, d in detail.items() if not d["alive"]]
    if not config.members:
        problems.insert(0, "the ring is empty")
    elif not config.active():
        problems.insert(0, "the ring has no active member")
    ring = {"epoch": config.epoch, "members": sorted(config.members), "detail": detail}
    return ring, problems


def _process_state(p: dict[str, Any]) -> str:
    if p.get("draining"):
        return "draining" if p["healthy"] else "drained"
    return "healthy" if p["healthy"] else "DOWN"


def status_text(doc: dict[str, Any]) -> str:
    ring = doc["ring"]
    lines = [f"webapp_url: {doc['webapp_url']}",
             f"ring epoch {ring['epoch']}: " + ", ".join(
                 f"{slot} ({d['state']}{'' if d['alive'] else ', DEAD'})"
                 for slot, d in ring["detail"].items())]
    lines += [f"  {p['name']:<16} {p['role']:<16} pid={p['pid']:<8} "
              f"{_process_state(p):<8} {p['address']}" for p in doc["processes"]]
    lines.append("healthy" if doc["healthy"] else "UNHEALTHY:")
    lines += [f"  - {problem}" for problem in doc["problems"]]
    return "\n".join(lines)
