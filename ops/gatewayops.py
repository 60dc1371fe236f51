"""`backchannel gateway drain NAME`: ask a gateway to drain itself (POST /drain: it leaves
discovery, refuses new clients and says `goodbye` to its clients spread over a window, then
exits), follow it until the process is gone, and drop it from cluster.json.

The gateway does the work; the command only asks and watches, so a Ctrl-C or a timeout here
leaves a gateway that still finishes its drain (and a record marked ``draining``, which the
next `gateway drain NAME` forgets once the process is gone)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from cluster.settings import Settings
from ops import probe
from ops.cluster import alive, forget_process, require_state, run_settings, update_processes
from ops.errors import ClusterError, UsageError
from ops.leases import live_leases
from ops.progress import bar

MAX_WINDOW_S = 600.0  # as the gateway's POST /drain accepts
DEFAULT_EXTRA_S = 60.0  # default --timeout: the window plus this
POLL_S = 0.1


@dataclasses.dataclass(frozen=True)
class Options:
    window: float | None = None  # None: the cluster's gateway_drain_window_s
    timeout: float | None = None  # None: the window + DEFAULT_EXTRA_S
    force: bool = False
    progress: bool = False


def drain(run_dir: Path, name: str, opts: Options) -> dict[str, Any]:
    started = time.monotonic()
    state = require_state(run_dir)
    settings = run_settings(state)
    entry = _gateway(state, name, run_dir)
    window = settings.gateway_drain_window_s if opts.window is None else opts.window
    if not alive(entry["pid"]):
        if not entry.get("draining"):
            raise ClusterError(f"{name} (pid {entry['pid']}) is not running, so there is "
                               f"nothing to drain; `backchannel ring remove {name}` forgets it")
        # an earlier drain finished after its command stopped watching: report its numbers
        forget_process(run_dir, name)
        asked = _asked_before(entry, window)
        return _result(name, asked["clients"], asked["window_s"], started)
    answer = _start_or_follow(entry, settings, window, opts.force)
    _mark_draining(run_dir, name, answer)
    timeout = opts.timeout if opts.timeout is not None else answer["window_s"] + DEFAULT_EXTRA_S
    _wait_gone(entry, answer["clients"], started + timeout, opts)
    forget_process(run_dir, name)
    return _result(name, answer["clients"], answer["window_s"], started)


def _start_or_follow(entry: dict[str, Any], settings: Settings, window: float,
                     force: bool) -> dict[str, Any]:
    """{"clients", "window_s"} of the drain: asked for now, or already under way (asked by a
    command that was interrupted or timed out), which is then just followed."""
    health = probe.health(entry["http_url"])
    if health is None:
        raise ClusterError(f"{entry['name']} (pid {entry['pid']}) does not answer at "
                           f"{entry['http_url']}; nothing done")
    if health.get("draining") is True:
        return _asked_before(entry, window, health)
    if not force:
        _refuse_last(settings, entry["name"])
    return _ask(entry, settings, window)


def _asked_before(entry: dict[str, Any], window: float,
                  health: dict[str, Any] | None = None) -> dict[str, Any]:
    """The numbers an earlier `gateway drain` recorded, else what the gateway says now."""
    asked = entry.get("drain") or {}
    now = health or {}
    clients = asked.get("clients", now.get("clients"))
    window_s = asked.get("window_s", now.get("drain_window_s"))
    return {"clients": clients if isinstance(clients, int) else 0,
            "window_s": window_s if isinstance(window_s, int | float) else window}


def _gateway(state: dict[str, Any], name: str, run_dir: Path) -> dict[str, Any]:
    entry = next((p for p in state["processes"] if p["name"] == name), None)
    if entry is None:
        gateways = [p["name"] for p in state["processes"] if p["role"] == "gateway_server"]
        raise UsageError(f"{name} is no process of {run_dir}; gateways: "
                         f"{', '.join(gateways) or 'none'}")
    if entry["role"] != "gateway_server":
        raise UsageError(f"{name} is a {entry['role']}, not a gateway_server"
                         + ("; see `backchannel ring drain`"
                            if entry["role"] == "channel_server" else ""))
    return entry


def _refuse_last(settings: Settings, name: str) -> None:
    """Clients told goodbye reconnect through rtm.connect, which hands out live gateways
    only: with none left they would have nowhere to go."""
    try:
        live = live_leases(settings).get("gateway_server", {})
    except redis.RedisError as exc:
        raise ClusterError(f"cannot reach Redis at {settings.redis_url}: {exc}") from None
    if not set(live) - {name}:
        raise ClusterError(f"{name} is the last live gateway: its clients would have nowhere "
                           "to reconnect; pass --force to drain it anyway")


def _ask(entry: dict[str, Any], settings: Settings, window: float) -> dict[str, Any]:
    """POST /drain; the gateway answers once it has left discovery."""
    url = entry["http_url"].rstrip("/") + "/drain"
    try:
        resp = httpx.post(url, json={"window_s": window},
                          headers={probe.INTERNAL_HEADER: settings.internal_secret},
                          timeout=settings.shutdown_grace_s + 5.0)
        doc = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ClusterError(f"{entry['name']} did not answer the drain request at {url}: "
                           f"{type(exc).__name__}; nothing done") from None
    if not isinstance(doc, dict) or doc.get("ok") is not True or not isinstance(
            doc.get("clients"), int) or not isinstance(doc.get("window_s"), int | float):
        error = doc.get("error") if isinstance(doc, dict) else None
        raise ClusterError(f"{entry['name']} refused to drain (HTTP {resp.status_code}, "
                           f"{error or 'unexpected answer'}); nothing done")
    return doc


def _mark_draining(run_dir: Path, name: str, answer: dict[str, Any]) -> None:
    """So that `status` does not report the gateway as a problem once it has exited, even
    if this command is no longer there to forget it."""
    mark = {"draining": True,
            "drain": {"clients": answer["clients"], "window_s": answer["window_s"]}}
    update_processes(run_dir, lambda ps: [{**p, **mark} if p["name"] == name else p
                                          for p in ps])


def _wait_gone(entry: dict[str, Any], clients: int, deadline: float, opts: Options) -> None:
    """Until the process has exited; the bar counts the clients it has closed (/health)."""
    left = clients
    with bar(f"draining {entry['name']}", clients, opts.progress) as update:
        while alive(entry["pid"]):
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{entry['name']} (pid {entry['pid']}) still runs with {left} clients; "
                    "it is out of discovery and refuses new clients. Run `backchannel gateway "
                    f"drain {entry['name']}` again to keep waiting, or kill {entry['pid']}")
            health = probe.health(entry["http_url"], timeout=POLL_S * 5)
            if health is not None and isinstance(health.get("clients"), int):
                left = health["clients"]
            update(clients - left)
            time.sleep(POLL_S)
        update(clients)


def _result(name: str, clients: int, window: float, started: float) -> dict[str, Any]:
    return {"gateway": name, "clients": clients, "window_s": float(window),
            "seconds": round(time.monotonic() - started, 3), "stopped": True}


def result_text(doc: dict[str, Any]) -> str:
    return (f"drained {doc['gateway']}: goodbye to {doc['clients']} clients over "
            f"{doc['window_s']:g}s; the process exited after {doc['seconds']:.1f}s and was "
            "removed from cluster.json")
