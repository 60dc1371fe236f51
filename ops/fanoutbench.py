"""`backchannel bench fanout`: fanout of one channel to M connected members (issue 8).

One workspace of M+1 users, all in #general (the seed puts everyone there). M RTM clients,
one per member, and one sender posting ~100-byte texts ``"fb <i> xxx..."`` to #general at
R msg/s (R=0: unpaced, a few posts in flight, as fast as the cluster accepts). The clients
and the sender run in one process of their own (``_clients_main``), built on picows and
orjson so that one core reads well over 150k messages/s: the harness must not be what is
measured. The cluster (MariaDB and Redis included) can be pinned to one cpu and the
clients to another.

Figures (docs/performance.md lists every JSON key):
- latency: a member's receive time minus the start of the post request that succeeded
  (one clock: the same process stamps both);
- lost: (message, member) pairs of an accepted post never received once deliveries stopped
  for ``settle`` seconds; duplicates; reordered (a member saw a stream position go back);
- kicked: sockets the server closed (and how many said ``goodbye`` first);
- CPU per delivery per role from /proc (utime+stime of every process and its threads),
  over the measured window: from just before the first post until every delivery arrived
  (or the settle wait ended);
- the gateways' RSS before the clients connect and once they are all connected and idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import multiprocessing
import os
import resource
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cluster import settings as settings_mod
from ops import apibench, cluster, fanoutclients
from ops.errors import ClusterError, UsageError
from ops.resumebench import rss_kib

CONNECT_CONCURRENCY = 32  # rtm.connect + handshake + hello in progress at once
QUIET_INTERVAL_S = 1.0  # after connecting: the cluster's CPU is read this often...
QUIET_BUSY = 0.05  # ...until its processes keep fewer cpus than this busy...
QUIET_TIMEOUT_S = 30.0  # ...or this long has passed
IDLE_S = 2.0  # then the idle cluster's CPU is measured over this long
SETTLE_S = 10.0  # the wait for missing deliveries ends after this long without progress
OWN_RATE_LIMIT = 10_000_000  # per user and minute in a throwaway cluster: never the cap
CLUSTER_ROLES = ("webapp", "admin_server", "channel_server", "gateway_server",
                 "presence_server", "ring_manager")
POST_PATH_ROLES = ("webapp", "admin_server", "channel_server")


@dataclasses.dataclass
class Options:
    members: int = 1000
    rate: float = 20.0  # msg/s; 0 = unpaced
    messages: int = 200
    gateways: int = 1  # only for --own-cluster
    text_bytes: int = 100
    pin_cluster: frozenset[int] | None = None  # None: no pinning
    pin_clients: frozenset[int] | None = None
    own_cluster: bool = False
    settle_s: float = SETTLE_S


def parse_cpus(text: str) -> frozenset[int]:
    """``0``, ``0,2`` or ``0-3`` (taskset's list form)."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    if not cpus:
        raise ValueError("no cpu given")
    return frozenset(cpus)


def default_pinning() -> tuple[frozenset[int], frozenset[int]] | None:
    """Cluster on cpu 0, clients on cpu 1, when there are two cpus to use."""
    usable = sorted(os.sched_getaffinity(0))
    return (frozenset(usable[:1]), frozenset(usable[1:2])) if len(usable) >= 2 else None


# --- /proc -------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads included (/proc/PID/stat fields 14, 15);
    0 for a process that is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def with_descendants(pids: list[int]) -> list[int]:
    """The processes and everything they started (a server may fork workers)."""
    tree, found, todo = _children(), [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += tree.get(pid, [])
    return found


def pidof(*names: str) -> list[int]:
    for name in names:
        out = subprocess.run(["pidof", name], capture_output=True, text=True).stdout
        if out.split():
            return [int(p) for p in out.split()]
    return []


def role_pids(state: dict[str, Any]) -> dict[str, list[int]]:
    """Every process of the cluster by role, and MariaDB and Redis (shared with other work
    on this machine: their share is what the whole machine asked of them meanwhile)."""
    roles: dict[str, list[int]] = {role: [] for role in CLUSTER_ROLES}
    for proc in state["processes"]:
        if proc["role"] in roles and cluster.alive(proc["pid"]):
            roles[proc["role"]] += with_descendants([proc["pid"]])
    roles["mariadb"] = pidof("mariadbd", "mysqld")
    roles["redis"] = pidof("redis-server")
    return roles


def cpu_snapshot(roles: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(cpu_seconds(p) for p in pids) for role, pids in roles.items()}


# --- pinning -----------------------------------------------------------------------------

def set_affinity(pid: int, cpus: frozenset[int] | set[int]) -> None:
    """Every thread of the process (as `taskset -a -p`); a thread that exits meanwhile is
    fine. Threads started later inherit their creator's affinity."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


@contextlib.contextmanager
def pinned(roles: dict[str, list[int]], cpus: frozenset[int] | None) -> Iterator[None]:
    """The cluster's processes, MariaDB and Redis on ``cpus`` for the block; afterwards
    MariaDB and Redis back on every cpu (they serve other work too) and the cluster's
    processes back where they were, whatever happens."""
    if cpus is None:
        yield
        return
    before: dict[int, set[int]] = {}
    everything = set(range(os.cpu_count() or 1))
    try:
        for role, pids in roles.items():
            for pid in pids:
                with contextlib.suppress(OSError):
                    before[pid] = everything if role in ("mariadb", "redis") \
                        else os.sched_getaffinity(pid)
                set_affinity(pid, cpus)
        yield
    finally:
        for pid, cpus_before in before.items():
            set_affinity(pid, cpus_before)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM unwinds like ^C, so that the pinning is undone and a throwaway cluster
    wiped."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the client process ------------------------------------------------------------------

@dataclasses.dataclass
class Spec:
    """What the client process needs: plain data, sent to a spawned process."""

    api: str
    channel: str
    sender: str  # token
    members: list[str]  # tokens
    messages: int
    rate: float
    text_bytes: int
    settle_s: float
    cpus: frozenset[int] | None


def _clients_main(conn: Connection, spec: Spec) -> None:
    """The client process: pinned, with every file descriptor the hard limit allows."""
    if spec.cpus is not None:
        set_affinity(os.getpid(), spec.cpus)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        asyncio.run(_clients(conn, spec))
    except Exception as exc:  # told to the parent, which reports it in one line
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


async def _clients(conn: Connection, spec: Spec) -> None:
    loop = asyncio.get_running_loop()
    crowd = fanoutclients.Crowd(spec.messages)
    started = time.perf_counter()
    await crowd.connect_all(spec.api, spec.members, CONNECT_CONCURRENCY)
    conn.send(("connected", {"connect_s": round(time.perf_counter() - started, 2),
                             "per_gateway": crowd.per_gateway()}))
    await loop.run_in_executor(None, _expect, conn, "go")
    sender = fanoutclients.Sender(spec.api, spec.sender, spec.channel, spec.messages,
                                  spec.text_bytes)
    await sender.run(spec.rate)
    settled = await crowd.settle(sender.accepted(), spec.settle_s)
    conn.send(("done", {}))
    await loop.run_in_executor(None, _expect, conn, "report")
    conn.send(("report", {**crowd.report(sender), "settled": settled}))
    crowd.close()


def _expect(conn: Connection, what: str) -> None:
    message = conn.recv()
    if message != what:
        raise RuntimeError(f"client process: expected {what!r}, got {message!r}")


class ClientProcess:
    """The spawned client process and its pipe; stopped on exit."""

    def __init__(self, spec: Spec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_clients_main, args=(child, spec), daemon=True,
                                name="fanout-clients")

    def __enter__(self) -> ClientProcess:
        self.proc.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def send(self, what: str) -> None:
        self.conn.send(what)

    def expect(self, what: str, timeout: float) -> dict[str, Any]:
        """The next message, which must be ``what``; waits at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not self.conn.poll(1.0):
            if not self.proc.is_alive():
                raise ClusterError(f"bench fanout: the client process exited "
                                   f"({self.proc.exitcode}) before {what!r}")
            if time.monotonic() > deadline:
                raise ClusterError(f"bench fanout: no {what!r} from the clients within "
                                   f"{timeout:g} s")
        kind, body = self.conn.recv()
        if kind == "error":
            raise ClusterError(f"bench fanout: client process: {body}")
        if kind != what:
            raise ClusterError(f"bench fanout: expected {what!r} from the clients, got {kind}")
        return body


# --- the run -----------------------------------------------------------------------------

@contextlib.contextmanager
def own_cluster(config: str | None, gateways: int) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A throwaway cluster (its own database and Redis prefix, a temporary run dir) with
    the per-user rate limit raised so that the one sender is never capped by it; stopped
    and wiped afterwards, whatever happens."""
    tag = secrets.token_hex(4)
    settings = dataclasses.replace(settings_mod.load(config),
                                   db_prefix=f"backchannelbench_{tag}",
                                   redis_prefix=f"bcbench:{tag}:",
                                   rate_limit_per_minute=OWN_RATE_LIMIT)
    counts = cluster.Counts(channels=1, gateways=gateways)
    with tempfile.TemporaryDirectory(prefix="backchannel-fanout-") as tmp:
        run_dir = Path(tmp)
        try:
            cluster.start(settings, run_dir, counts)
            yield run_dir, {"own": True, "db_prefix": settings.db_prefix,
                            "redis_prefix": settings.redis_prefix}
        finally:
            cluster.stop(run_dir)
            apibench._wipe(settings)


def run(run_dir: Path, opts: Options, config: str | None = None) -> dict[str, Any]:
    """Against the run dir's cluster, or (``opts.own_cluster``) a throwaway one."""
    if opts.messages >= fanoutclients.MAX_MESSAGES:
        raise UsageError(f"bench fanout: at most {fanoutclients.MAX_MESSAGES - 1} messages")
    with sigterm_as_interrupt():
        if opts.own_cluster:
            with own_cluster(config, opts.gateways) as (own, about):
                return {**_run(own, opts), "cluster": about}
        cluster.require_state(run_dir)
        return {**_run(run_dir, opts), "cluster": {"own": False, "run_dir": str(run_dir)}}


def _gateways(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in state["processes"]
            if p["role"] == "gateway_server" and cluster.alive(p["pid"])]


def _quiesce(roles: dict[str, list[int]], gateway_pids: list[int]) -> float:
    """Wait, once every member is connected, until the cluster is idle: its own processes
    (not MariaDB or Redis, which others share) below QUIET_BUSY cpus over one second and
    the gateways' RSS steady within 1%, or QUIET_TIMEOUT_S at most (work that never stops
    shows in ``idle_busy``). Returns how long it waited."""
    started = time.monotonic()
    cpu, rss = cpu_snapshot(roles), {pid: rss_kib(pid) for pid in gateway_pids}
    while True:
        time.sleep(QUIET_INTERVAL_S)
        cpu_now, rss_now = cpu_snapshot(roles), {pid: rss_kib(pid) for pid in gateway_pids}
        busy = _delta(cpu, cpu_now)
        steady = all(abs(rss_now[p] - rss[p]) <= 0.01 * max(rss[p], 1) for p in rss)
        quiet = sum(busy[r] for r in CLUSTER_ROLES) < QUIET_BUSY * QUIET_INTERVAL_S
        waited = time.monotonic() - started
        if (quiet and steady) or waited > QUIET_TIMEOUT_S:
            return waited
        cpu, rss = cpu_now, rss_now


def _idle(roles: dict[str, list[int]], gateway_pids: list[int]
          ) -> tuple[dict[str, float], dict[int, int]]:
    """Cpus each role keeps busy with every member connected and nothing posted, over
    IDLE_S (background work: what a delivery's CPU figure includes besides fanout), and
    the gateways' RSS at the end."""
    before, started = cpu_snapshot(roles), time.monotonic()
    time.sleep(IDLE_S)
    busy = _delta(before, cpu_snapshot(roles))
    elapsed = time.monotonic() - started
    return ({r: s / elapsed for r, s in busy.items()},
            {pid: rss_kib(pid) for pid in gateway_pids})


def _run(run_dir: Path, opts: Options) -> dict[str, Any]:
    state = cluster.require_state(run_dir)
    settings = cluster.run_settings(state)
    load = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    ws = cluster.seed(run_dir, opts.members + 1, team_name="fanout-bench")
    seed_s = round(time.perf_counter() - started, 2)
    spec = Spec(api=ws["webapp_url"], channel=ws["channels"][0]["id"],
                sender=ws["users"][0]["token"],
                members=[u["token"] for u in ws["users"][1:]], messages=opts.messages,
                rate=opts.rate, text_bytes=opts.text_bytes, settle_s=opts.settle_s,
                cpus=opts.pin_clients)
    roles = role_pids(state)
    gateways = _gateways(state)
    with pinned(roles, opts.pin_cluster):
        measured = _measure(spec, roles, gateways, opts)
    return {"members": opts.members, "rate": opts.rate, "messages": opts.messages,
            "text_bytes": opts.text_bytes, "gateways": len(gateways),
            "rate_limit_per_minute": settings.rate_limit_per_minute,
            "pinning": _pinning_doc(opts), "load_1m_before": load, "cpus": os.cpu_count(),
            "setup": {"seed_s": seed_s, "connect_s": measured.pop("connect_s"),
                      "quiet_wait_s": measured.pop("quiet_wait_s")},
            **measured}


def _pinning_doc(opts: Options) -> dict[str, list[int]] | None:
    if opts.pin_cluster is None and opts.pin_clients is None:
        return None
    return {"cluster": sorted(opts.pin_cluster or ()), "clients": sorted(opts.pin_clients or ())}


def _measure(spec: Spec, roles: dict[str, list[int]], gateways: list[dict[str, Any]],
             opts: Options) -> dict[str, Any]:
    gateway_pids = [g["pid"] for g in gateways]
    rss_before = {pid: rss_kib(pid) for pid in gateway_pids}
    cpu_start = cpu_snapshot(roles)
    with ClientProcess(spec) as clients:
        connected = clients.expect("connected", 120 + 0.1 * opts.members)
        cpu_connected = cpu_snapshot(roles)
        quiet_wait = _quiesce(roles, gateway_pids)
        idle_busy, rss_connected = _idle(roles, gateway_pids)
        cpu_before = cpu_snapshot(roles)
        client_before = cpu_seconds(clients.pid)
        window = time.perf_counter()
        clients.send("go")
        clients.expect("done", math.inf)
        window = time.perf_counter() - window
        cpu_after = cpu_snapshot(roles)
        client_cpu = cpu_seconds(clients.pid) - client_before
        clients.send("report")
        report = clients.expect("report", 300)
    memory = _memory_doc(gateways, rss_before, rss_connected, connected["per_gateway"])
    cpu = _cpu_doc(_delta(cpu_before, cpu_after), client_cpu, window, report)
    # what the cluster did besides the bench: connecting, and the idle moment before it
    cpu["connect_cpu_s"] = {r: round(s, 3) for r, s in _delta(cpu_start, cpu_connected).items()}
    cpu["idle_busy"] = {r: round(b, 3) for r, b in idle_busy.items()}
    return {**report, "connect_s": connected["connect_s"], "quiet_wait_s": round(quiet_wait, 2),
            "memory": memory, "cpu": cpu}


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {role: after[role] - before[role] for role in before}


def _memory_doc(gateways: list[dict[str, Any]], before: dict[int, int],
                after: dict[int, int], per_gateway: dict[str, int]) -> dict[str, Any]:
    doc = {}
    for g in gateways:
        conns = per_gateway.get(urlsplit(g["url"]).netloc, 0)
        grown = after[g["pid"]] - before[g["pid"]]
        doc[g["name"]] = {"connections": conns, "rss_kb_before": before[g["pid"]],
                          "rss_kb_connected": after[g["pid"]],
                          "kb_per_connection": round(grown / conns, 2) if conns else None}
    return doc


def _per(seconds: float, count: int) -> float | None:
    return round(seconds * 1e6 / count, 2) if count else None


def _cpu_doc(cpu: dict[str, float], client_cpu: float, window: float,
             report: dict[str, Any]) -> dict[str, Any]:
    deliveries = report["deliveries"]["received"]
    posts = report["posts"]["accepted"]
    cluster_s = sum(cpu.values())
    post_path = sum(cpu[r] for r in POST_PATH_ROLES)
    return {
        "window_s": round(window, 3),
        "roles": {role: {"cpu_s": round(s, 3), "us_per_delivery": _per(s, deliveries)}
                  for role, s in cpu.items()},
        "cluster_cpu_s": round(cluster_s, 3),
        "cluster_us_per_delivery": _per(cluster_s, deliveries),
        "cluster_busy": round(cluster_s / window, 3) if window else None,
        "post_path_us_per_post": _per(post_path, posts),
        "clients_cpu_s": round(client_cpu, 3),
        "clients_us_per_delivery": _per(client_cpu, deliveries),
    }


# --- what to print -----------------------------------------------------------------------

def clean(doc: dict[str, Any]) -> bool:
    """Nothing lost and nothing twice (kicked and reordered are reported, not judged)."""
    return doc["deliveries"]["lost"] == 0 and doc["deliveries"]["duplicates"] == 0


def _ms(stats: dict[str, Any]) -> str:
    return f"p50 {stats['p50']} ms, p99 {stats['p99']} ms, max {stats['max']} ms"


def text(doc: dict[str, Any]) -> str:
    d, p, c, cpu = doc["deliveries"], doc["posts"], doc["clients"], doc["cpu"]
    rate = "unpaced" if not doc["rate"] else f"{doc['rate']:g} msg/s"
    pin = doc["pinning"]
    lines = [
        f"fanout: {doc['members']} members, {doc['messages']} messages of "
        f"{doc['text_bytes']} bytes, {rate}, {doc['gateways']} gateway(s); "
        + (f"cluster on cpu {pin['cluster']}, clients on cpu {pin['clients']}" if pin
           else "not pinned")
        + f"; load {doc['load_1m_before']} on {doc['cpus']} cpus before",
        f"per-user rate limit {doc['rate_limit_per_minute']}/min"
        + (" (raised in this throwaway cluster)" if doc["cluster"].get("own") else ""),
        f"setup: seed {doc['setup']['seed_s']} s, connect {doc['setup']['connect_s']} s, "
        f"then {doc['setup']['quiet_wait_s']} s until the cluster was idle",
        f"posts: {p['accepted']} accepted at {p['per_s']}/s, {p['ratelimited']} answered "
        f"429, {p['failed']} failed",
        f"deliveries: {d['received']}/{d['expected']} at {d['per_s']}/s; lost {d['lost']}, "
        f"duplicates {d['duplicates']}, reordered {d['reordered']}",
        f"latency (post start -> receive): {_ms(doc['latency_ms'])}",
        f"clients: {c['connected']} connected, {c['kicked']} kicked ({c['goodbye']} told "
        f"goodbye), {c['complete']} got every message",
        f"cpu over {cpu['window_s']} s: cluster {cpu['cluster_us_per_delivery']} us/delivery "
        f"({cpu['cluster_busy']} cpus busy); post path {cpu['post_path_us_per_post']} "
        f"us/post; clients {cpu['clients_us_per_delivery']} us/delivery",
    ]
    lines += [f"  {role:<16} {r['cpu_s']:>8} s  {r['us_per_delivery']} us/delivery"
              for role, r in cpu["roles"].items() if r["cpu_s"]]
    busy = {r: b for r, b in cpu["idle_busy"].items() if b >= 0.05}
    lines.append("busy while idle (2 s before posting): "
                 + (", ".join(f"{r} {b} cpus" for r, b in busy.items()) or "nothing"))
    lines.append("cpu while connecting: " + ", ".join(
        f"{r} {s} s" for r, s in cpu["connect_cpu_s"].items() if s))
    lines += [f"memory {name}: {m['rss_kb_before']} KB -> {m['rss_kb_connected']} KB with "
              f"{m['connections']} connections: {m['kb_per_connection']} KB/connection"
              for name, m in doc["memory"].items()]
    return "\n".join(lines)

