"""`backchannel ring add|drain|remove`: change the ring one step at a time. Each step is one
epoch bump written with compare-and-set (ops.cluster.update_ring), and the command waits for
the cluster to follow before taking the next step, so that no stream is ever without an
owner that its gateways can reach."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from cluster.ring import Member, Ring, RingConfig, moved
from ops import probe
from ops.cluster import (
    add_process,
    alive,
    forget_process,
    spawn,
    stop_pids,
    update_ring,
    wait_addrs,
    wait_healthy,
)
from ops.errors import ClusterError
from ops.progress import Update, bar
from ops.views import View, load_view

DEFAULT_TIMEOUT_S = 60.0
POLL_S = 0.1
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# the /health field in which each role reports its link to every ring member
LINK_FIELD = {"admin_server": "links", "gateway_server": "upstreams"}
DRY_RUN_URL = "ws://dry-run.invalid"


@dataclasses.dataclass(frozen=True)
class Options:
    dry_run: bool = False
    timeout: float = DEFAULT_TIMEOUT_S
    progress: bool = False


@dataclasses.dataclass(frozen=True)
class Prediction:
    moving: dict[str, int]  # {"streams", "subscriptions"} that change serving process
    live: dict[str, int]  # the same counts over every stream the members hold
    unreadable: list[str]  # slots whose stream list could not be read


def counts(held: Mapping[str, int] | None) -> dict[str, int]:
    held = held or {}
    return {"streams": len(held), "subscriptions": sum(held.values())}


def predict(view: View, after: RingConfig) -> Prediction:
    """What moves from the ring in ``view`` to ``after``, over the live stream list."""
    live, unreadable = view.live_streams()
    moving = moved(Ring(view.config), Ring(after), live)
    return Prediction(counts({s: live[s] for s in moving}), counts(live), unreadable)


def _result(op: str, slot: str | None, process: str, view: View, opts: Options,
            prediction: Prediction | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "op": op, "member": slot, "process": process, "epoch_before": view.config.epoch,
        "epoch_after": view.config.epoch, "dry_run": opts.dry_run,
        "predicted": counts(None), "moved": counts(None), "seconds": 0.0, "warnings": []}
    if prediction is not None:
        _set_prediction(doc, prediction)
    return doc


def _set_prediction(doc: dict[str, Any], prediction: Prediction) -> None:
    doc["predicted"] = prediction.moving
    doc["live"] = prediction.live
    doc["warnings"] += [f"could not list the streams of {slot}; predictions leave them out"
                        for slot in prediction.unreadable]


def _finish(doc: dict[str, Any], started: float) -> dict[str, Any]:
    doc["seconds"] = round(time.monotonic() - started, 3)
    return doc


def _poll(check: Callable[[], tuple[bool, int]], timeout: float,
          update: Update) -> tuple[bool, int]:
    """Call ``check`` until it says done or ``timeout`` passes; returns its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        done, value = check()
        update(value)
        if done or time.monotonic() > deadline:
            return done, value
        time.sleep(POLL_S)


# --- ring changes, applied inside update_ring's compare-and-set ----------------------------

def _join(slot: str, url: str, config: RingConfig) -> RingConfig:
    if slot in config.members:
        raise ClusterError(f"{slot} is already a ring member")
    return config.with_member(slot, Member(url=url, state="joining", process=slot))


def _set_state(slot: str, process: str, state: str, config: RingConfig) -> RingConfig | None:
    member = config.members.get(slot)
    if member is None or member.process != process:
        raise ClusterError(f"the ring changed meanwhile: {slot} is no longer served by "
                           f"{process}; nothing more done")
    return None if member.state == state else config.with_state(slot, state)


def _remove(slot: str, process: str, config: RingConfig) -> RingConfig | None:
    member = config.members.get(slot)
    if member is None:
        return None  # someone (the ring manager) was quicker; fine
    if member.process != process:
        raise ClusterError(f"{slot} is now served by {member.process}; not removed")
    return config.without(slot)


# --- processes ------------------------------------------------------------------------------

def used_names(view: View) -> set[str]:
    names = {p["name"] for p in view.state["processes"]} | set(view.config.members)
    names |= {m.process for m in view.config.members.values()}
    return names | set(view.leases.get("channel_server", {}))


def next_name(view: View) -> str:
    used = used_names(view)
    k = 1
    while f"channel-{k}" in used:
        k += 1
    return f"channel-{k}"


def _start_channel(view: View, name: str, standby: bool = False) -> dict[str, Any]:
    """Spawn a channel server like `up` does and record it in cluster.json."""
    proc = spawn(view.run_dir, "channel_server", name, Path(view.state["config"]), standby)
    try:
        info = wait_addrs(view.run_dir, {name: proc})[name]
        wait_healthy([info])
    except BaseException:
        stop_pids([proc.pid])
        raise
    record = {**info, "pid": proc.pid}
    add_process(view.run_dir, record)
    return record


def _stop(view: View, process: str, doc: dict[str, Any]) -> None:
    entry = view.process(process)
    if entry is None:
        doc["warnings"].append(f"process {process} was not started from {view.run_dir}; "
                               "left running")
        return
    if alive(entry["pid"]):
        stop_pids([entry["pid"]], view.settings.shutdown_grace_s + 5.0)
    forget_process(view.run_dir, process)


# --- add ------------------------------------------------------------------------------------

def add(run_dir: Path, name: str | None, opts: Options) -> dict[str, Any]:
    """Start a channel server, link everyone to it (joining), then give it its streams
    (active) and wait until its subscriptions arrive."""
    started = time.monotonic()
    view = load_view(run_dir)
    name = name or next_name(view)
    if name in used_names(view):
        raise ClusterError(f"{name} is taken (ring slot, process in {run_dir}, or live lease)")
    hypothetical = Member(url=DRY_RUN_URL, state="active", process=name)
    doc = _result("add", name, name, view, opts,
                  predict(view, view.config.with_member(name, hypothetical)))
    if opts.dry_run:
        return _finish(doc, started)
    info = _start_channel(view, name)
    try:
        _, joined = update_ring(view.settings, partial(_join, name, info["url"]))
        _wait_linked(view, name, joined.epoch, opts)
        view = load_view(run_dir)  # streams may have come and gone while it started
        prediction = predict(view, view.config.with_state(name, "active"))
        _, activated = update_ring(view.settings, partial(_set_state, name, name, "active"))
    except BaseException:
        _undo_add(view, name, info)
        raise
    doc["warnings"] = []
    _set_prediction(doc, prediction)
    doc["epoch_after"] = activated.epoch
    _wait_subscriptions(info, prediction.moving["subscriptions"], activated.epoch, opts)
    doc["moved"] = counts(probe.streams(info["http_url"], view.settings.internal_secret))
    return _finish(doc, started)


def _wait_linked(view: View, slot: str, epoch: int, opts: Options) -> None:
    """Until every live admin and gateway runs at ``epoch`` or later with a link up to
    ``slot``: only then can streams move there without a gap."""
    peers = [p for p in view.state["processes"]
             if p["role"] in LINK_FIELD and alive(p["pid"])]
    pending = list(peers)

    def check() -> tuple[bool, int]:
        pending[:] = [p for p in pending if not _linked(p, slot, epoch)]
        return not pending, len(peers) - len(pending)

    with bar(f"linking {slot}", len(peers), opts.progress) as update:
        done, _ = _poll(check, opts.timeout, update)
    if not done:
        names = ", ".join(p["name"] for p in pending)
        raise ClusterError(f"after {opts.timeout:g}s these have no link to {slot} at epoch "
                           f">= {epoch}: {names}; {slot} was taken off the ring again")


def _linked(peer: dict[str, Any], slot: str, epoch: int) -> bool:
    doc = probe.health(peer["http_url"])
    if doc is None or not isinstance(doc.get("epoch"), int) or doc["epoch"] < epoch:
        return False
    links = doc.get(LINK_FIELD[peer["role"]])
    return isinstance(links, dict) and links.get(slot) is True


def _wait_subscriptions(info: dict[str, Any], target: int, epoch: int, opts: Options) -> None:
    def check() -> tuple[bool, int]:
        subs = probe.subscriptions(info["http_url"]) or 0
        return subs >= target, subs

    with bar(f"subscriptions moving to {info['name']}", target, opts.progress) as update:
        done, subs = _poll(check, opts.timeout, update)
    if not done:
        raise ClusterError(f"{info['name']} is active (epoch {epoch}) but holds {subs} of the "
                           f"{target} predicted subscriptions after {opts.timeout:g}s")


def _undo_add(view: View, name: str, info: dict[str, Any]) -> None:
    """A member that never became active owns nothing: take it off and stop it."""
    def undo(config: RingConfig) -> RingConfig | None:
        member = config.members.get(name)
        if member is None or member.state == "active":
            return None
        return config.without(name)

    _, after = update_ring(view.settings, undo)
    if name not in after.members:
        stop_pids([info["pid"]])
        forget_process(view.run_dir, name)


# --- drain ----------------------------------------------------------------------------------

def member_slot(config: RingConfig, name: str) -> str | None:
    """The slot ``name`` means: the slot its process serves, else a slot of that name."""
    return config.slot_of(name) or (name if name in config.members else None)


def drain(run_dir: Path, name: str, opts: Options) -> dict[str, Any]:
    """Mark draining, wait until the member holds no subscriptions, remove it, stop it."""
    started = time.monotonic()
    view = load_view(run_dir)
    slot = member_slot(view.config, name)
    if slot is None:
        raise ClusterError(f"{name} is not a ring member")
    member = view.config.members[slot]
    if view.config.active() == [slot]:
        raise ClusterError(f"{slot} is the last active member; add another one first")
    doc = _result("drain", slot, member.process, view, opts,
                  predict(view, view.config.with_state(slot, "draining")))
    if opts.dry_run:
        return _finish(doc, started)
    held = view.member_streams(slot)
    url = view.http_url(member.process)
    if held is None or url is None:
        raise ClusterError(f"{slot} (process {member.process}) does not answer; "
                           f"use `backchannel ring remove {slot}`")
    doc["moved"] = counts(held)
    update_ring(view.settings, partial(_set_state, slot, member.process, "draining"))
    doc["subscriptions_at_removal"] = _wait_drained(view, slot, url, sum(held.values()), opts)
    _, removed = update_ring(view.settings, partial(_remove, slot, member.process))
    doc["epoch_after"] = removed.epoch
    _stop(view, member.process, doc)
    return _finish(doc, started)


def _wait_drained(view: View, slot: str, url: str, total: int, opts: Options) -> int:
    process = view.config.members[slot].process
    entry = view.process(process)
    last = [total]

    def check() -> tuple[bool, int]:
        subs = probe.subscriptions(url)
        if subs is None and entry is not None and not alive(entry["pid"]):
            raise ClusterError(f"{process} died while draining; use "
                               f"`backchannel ring remove {slot}`")
        last[0] = last[0] if subs is None else subs
        return last[0] == 0, total - last[0]

    with bar(f"draining {slot}", total, opts.progress) as update:
        done, _ = _poll(check, opts.timeout, update)
    if not done:
        raise ClusterError(f"{slot} still holds {last[0]} subscriptions after "
                           f"{opts.timeout:g}s; it stays draining (run `ring drain` again, or "
                           "`ring remove` to drop it now)")
    return last[0]


# --- remove ---------------------------------------------------------------------------------

def remove(run_dir: Path, name: str, opts: Options) -> dict[str, Any]:
    """Take a member off the ring at once (for a dead one); stop its process if it still
    runs. A dead process of this run dir that is on no ring slot is just forgotten."""
    started = time.monotonic()
    view = load_view(run_dir)
    entry = view.process(name)
    slot = member_slot(view.config, name)
    if slot is not None and _stale_name(view, slot, name, entry):
        slot = None
    if slot is None:
        return _finish(_forget(view, name, entry, opts), started)
    member = view.config.members[slot]
    doc = _result("remove", slot, member.process, view, opts,
                  predict(view, view.config.without(slot)))
    if opts.dry_run:
        return _finish(doc, started)
    doc["moved"] = counts(view.member_streams(slot))  # what it held; nothing if dead
    _, removed = update_ring(view.settings, partial(_remove, slot, member.process))
    doc["epoch_after"] = removed.epoch
    _stop(view, member.process, doc)
    return _finish(doc, started)


def _stale_name(view: View, slot: str, name: str, entry: dict[str, Any] | None) -> bool:
    """True when ``name`` is both a slot now served by a standby that took it over and the
    dead process that served it before: the user means that dead process, not the slot."""
    return (slot == name and view.config.members[slot].process != name
            and entry is not None and not alive(entry["pid"]))


def _forget(view: View, name: str, entry: dict[str, Any] | None,
            opts: Options) -> dict[str, Any]:
    if entry is None:
        raise ClusterError(f"{name} is neither a ring member nor a process of {view.run_dir}")
    if alive(entry["pid"]):
        raise ClusterError(f"{name} ({entry['role']}) is running and is not a ring member; "
                           "nothing removed")
    doc = _result("remove", None, name, view, opts)
    doc["forgotten"] = True
    if not opts.dry_run:
        forget_process(view.run_dir, name)
    return doc


def result_text(doc: dict[str, Any]) -> str:
    p, m = doc["predicted"], doc["moved"]
    if doc.get("forgotten"):
        verb = "would forget" if doc["dry_run"] else "forgot"
        line = f"{verb} process {doc['process']}: it is gone and serves no ring slot"
    elif doc["dry_run"]:
        line = (f"dry run: {doc['op']} {doc['member']} would move {p['streams']} streams and "
                f"{p['subscriptions']} subscriptions (ring epoch stays {doc['epoch_before']})")
    else:
        verb = {"add": "added", "drain": "drained and removed", "remove": "removed"}[doc["op"]]
        line = (f"{verb} {doc['member']} (process {doc['process']}): epoch "
                f"{doc['epoch_before']} -> {doc['epoch_after']}; moved {m['streams']} streams"
                f" / {m['subscriptions']} subscriptions (predicted {p['streams']} / "
                f"{p['subscriptions']}) in {doc['seconds']:.1f}s")
    return "\n".join([line] + [f"warning: {w}" for w in doc["warnings"]])
