"""`backchannel resume-bench`: what RTM resume (docs/rtm.md) costs and how fast it is,
measured against the running cluster through the real path with resuming clients
(ops/resumer.py). Three numbers:

- failover: N clients on one gateway, a poster posting to #general; kill -9 of that gateway;
  seconds until every client has *resumed* (hello on a new socket, then a live message:
  see ops/resumer.py), with lost / duplicated / reordered counted against every acked post.
  The killed gateway is started again afterwards as `up` starts it (same name, new pid).
- memory: the killed gateway, started again (a fresh process), and the N clients resumed
  there after missing `MEMORY_AWAY` posts; its RSS (/proc/PID/status VmRSS) once they have
  caught up, minus its RSS before, divided by N: what a resumed session costs (one-off
  costs of the process's first clients included, so an upper bound).
- replay: one client away while `--away` messages are posted (concurrently), then resumed;
  events/s from its hello to the last replayed event.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from ops import cluster, loadcheck
from ops.errors import ClusterError
from ops.resumer import ResumingClient, start_all, totals

POSTER_USERS = 8  # the per-user rate limit allows a burst of 6,000: 8 users post 10,000 at once
START_CONCURRENCY = 50  # clients connecting at once
RESUME_DEADLINE_S = 180.0
SETTLE_S = 60.0
LOAD_BEFORE_KILL = 1.0  # seconds of posts before the kill, and after every client resumed
MEMORY_AWAY = 100  # posts the clients miss before resuming on the restarted gateway


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _seconds(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "max": None}
    return {"p50": round(statistics.median(values), 3), "max": round(max(values), 3)}


def _http() -> httpx.AsyncClient:
    # many clients reconnect at once: wait for a pooled connection instead of timing out
    return httpx.AsyncClient(timeout=httpx.Timeout(30, pool=None),
                             limits=httpx.Limits(max_connections=100))


async def _until(pred: Any, timeout: float, what: str) -> None:
    try:
        with trio.fail_after(timeout):
            while not pred():
                await trio.sleep(0.02)
    except trio.TooSlowError:
        raise ClusterError(f"resume-bench: not within {timeout:g} s: {what}") from None


def _gateways(state: dict[str, Any], name: str | None) -> tuple[dict[str, Any], list[dict]]:
    gateways = [p for p in state["processes"] if p["role"] == "gateway_server"
                and cluster.alive(p["pid"])]
    if len(gateways) < 2:
        raise ClusterError("resume-bench kills a gateway: it needs at least 2 live ones "
                           "(`backchannel up --gateways 2`)")
    victim = next((g for g in gateways if g["name"] == name), None) if name else gateways[0]
    if victim is None:
        raise ClusterError(f"no live gateway {name} in this run dir")
    return victim, [g for g in gateways if g is not victim]


# --- failover and memory ----------------------------------------------------------------

async def _failover(api: str, ws: dict[str, Any], victim: dict[str, Any],
                    clients: list[ResumingClient], rate: float) -> dict[str, Any]:
    general = ws["channels"][0]["id"]
    async with _http() as http, trio.open_nursery() as nursery:
        for c in clients:
            c.http = http
        await start_all(nursery, clients, START_CONCURRENCY)
        load = loadcheck.Poster(http, api, ws["users"][0]["token"], [general], "kill")
        stop = trio.Event()
        async with trio.open_nursery() as posting:
            posting.start_soon(load.run, rate, lambda i: not stop.is_set())
            await _until(lambda: load.sent >= rate * LOAD_BEFORE_KILL, 30, "load before kill")
            killed_at = time.monotonic()
            os.kill(victim["pid"], signal.SIGKILL)
            await _until(lambda: all(c.resumed_after(killed_at) for c in clients),
                         RESUME_DEADLINE_S, "every client of the killed gateway resumed")
            resumed = load.sent
            await _until(lambda: load.sent >= resumed + rate * LOAD_BEFORE_KILL, 30, "load")
            stop.set()
        await loadcheck.settle_until_complete([c.member for c in clients], load.acked,
                                              SETTLE_S)
        nursery.cancel_scope.cancel()
    return _failover_doc(clients, load, killed_at)


def _failover_doc(clients: list[ResumingClient], load: loadcheck.Poster,
                  killed_at: float) -> dict[str, Any]:
    report = load.report([c.member for c in clients])
    own = totals(clients)
    hello = [s.hello_at - killed_at for c in clients
             if (s := c.hello_after(killed_at)) and s.hello_at]
    live = [s.live_at - killed_at for c in clients
            if (s := c.resumed_after(killed_at)) and s.live_at]
    return {"clients": len(clients), "posts": load.sent, **report.counts(),
            **report.text_counts(), **_own(own),
            "hello_s": _seconds(hello), "resumed_s": _seconds(live)}


def _own(counts: dict[str, int]) -> dict[str, int]:
    """What the clients' own per-stream seq checks found."""
    return {"seq_lost": counts["lost"], "seq_duplicated": counts["duplicated"],
            "seq_reordered": counts["reordered"], "resume_failed": counts["resume_failed"],
            "leaked": counts["leaked"], "position_mismatch": counts["position_mismatch"],
            "sessions": counts["sessions"]}


async def _memory(api: str, ws: dict[str, Any], gateway: dict[str, Any],
                  clients: list[ResumingClient], concurrency: int) -> dict[str, Any]:
    """The clients (stopped, positions kept) miss some posts, then resume on ``gateway``."""
    general = ws["channels"][0]["id"]
    tokens = [u["token"] for u in ws["users"][:POSTER_USERS]]
    before = rss_kib(gateway["pid"])
    async with _http() as http, trio.open_nursery() as nursery:
        load = await _post_many(http, api, tokens, general, MEMORY_AWAY, concurrency, "mem")
        for c in clients:
            c.reset_counts()  # the failover's counts are reported already
            c.http, c.pin, c.prefix = http, gateway["url"], "mem"
        await start_all(nursery, clients, START_CONCURRENCY)
        members = [c.member for c in clients]
        await _until(lambda: all(loadcheck.complete(m, load.acked) for m in members),
                     SETTLE_S, "every client caught up on the restarted gateway")
        after = rss_kib(gateway["pid"])
        on_it = sum(1 for c in clients if c.sessions[-1].gateway in gateway["url"])
        nursery.cancel_scope.cancel()
    report = load.report(members)
    return {"gateway": gateway["name"], "clients": on_it, "replayed_each": MEMORY_AWAY,
            "rss_kib_before": before, "rss_kib_after": after,
            "per_session_kib": round((after - before) / max(on_it, 1), 1),
            **{k: report.counts()[k] for k in ("lost", "duplicated", "reordered")},
            **_own(totals(clients))}


def _restart(run_dir: Path, state: dict[str, Any], victim: dict[str, Any]) -> dict[str, Any]:
    """Start the killed gateway again as `up` does (same name; new pid and port), and
    record it in cluster.json."""
    name = victim["name"]
    proc = cluster.spawn(run_dir, "gateway_server", name, Path(state["config"]))
    try:
        info = cluster.wait_addrs(run_dir, {name: proc})[name]
        cluster.wait_healthy([info])
    except BaseException:
        cluster.stop_pids([proc.pid])
        cluster.forget_process(run_dir, name)
        raise
    record = {**info, "pid": proc.pid}
    cluster.add_process(run_dir, record)
    return {"name": name, "pid": proc.pid, "url": info["url"]}


# --- replay ------------------------------------------------------------------------------

async def _post_many(http: httpx.AsyncClient, api: str, tokens: list[str], channel: str,
                     count: int, concurrency: int, prefix: str) -> loadcheck.Poster:
    """``count`` posts as fast as ``concurrency`` tasks go, spread over ``tokens`` so no
    user's rate limit is reached."""
    posters = [loadcheck.Poster(http, api, t, [channel], prefix) for t in tokens]
    numbers = iter(range(count))

    async def worker(k: int) -> None:
        for i in numbers:
            await posters[k % len(posters)].post(i)

    async with trio.open_nursery() as nursery:
        for k in range(concurrency):
            nursery.start_soon(worker, k)
    merged = loadcheck.Poster(http, api, tokens[0], [channel], prefix)
    for p in posters:
        merged.acked.setdefault(channel, []).extend(p.acked.get(channel, []))
        merged.posted.setdefault(channel, set()).update(p.posted.get(channel, set()))
        merged.failed += p.failed
    merged.acked[channel].sort()
    merged.sent = count
    return merged


async def _replay(api: str, ws: dict[str, Any], away: int, concurrency: int) -> dict[str, Any]:
    general = ws["channels"][0]["id"]
    tokens = [u["token"] for u in ws["users"][:POSTER_USERS]]
    async with _http() as http:
        client = ResumingClient(api, ws["users"][-1]["token"], http=http, prefix="away")
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            nursery.cancel_scope.cancel()  # away from here
        started = time.monotonic()
        load = await _post_many(http, api, tokens, general, away, concurrency, "away")
        posting_s = time.monotonic() - started
        acked = len(load.acked[general])
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            await _until(lambda: len(client.member.got.get(general, [])) >= acked,
                         RESUME_DEADLINE_S, f"the {acked} events replayed")
            nursery.cancel_scope.cancel()
    session = next(s for s in client.sessions[1:] if s.hello_at)
    hello_at = session.hello_at or 0.0
    last = client.member.got[general][acked - 1][1]
    report = load.report([client.member])
    return {"events": acked, "failed_posts": load.failed, "posting_s": round(posting_s, 2),
            "posts_per_s": round(acked / posting_s, 1),
            "connect_s": round(hello_at - session.requested_at, 3),
            "replay_s": round(last - hello_at, 3),
            "events_per_s": round(acked / max(last - hello_at, 1e-6), 1),
            **{k: report.counts()[k] for k in ("lost", "duplicated", "reordered")},
            **_own(client.counts())}


def run(run_dir: Path, clients: int = 100, away: int = 10_000, rate: float = 50.0,
        concurrency: int = 16, gateway: str | None = None) -> dict[str, Any]:
    state = cluster.require_state(run_dir)
    victim, survivors = _gateways(state, gateway)
    ws = cluster.seed(run_dir, POSTER_USERS + clients, team_name="resume-bench")
    api = ws["webapp_url"]
    crowd = [ResumingClient(api, u["token"], prefix="kill", pin=victim["url"])
             for u in ws["users"][POSTER_USERS:]]
    doc: dict[str, Any] = {"victim": victim["name"],
                           "survivors": [g["name"] for g in survivors], "rate": rate}
    try:
        doc["failover"] = trio.run(_failover, api, ws, victim, crowd, rate)
    finally:
        if not cluster.alive(victim["pid"]):
            doc["restarted"] = _restart(run_dir, state, victim)
    if "restarted" in doc:
        doc["memory"] = trio.run(_memory, api, ws, doc["restarted"], crowd, concurrency)
    doc["replay"] = trio.run(_replay, api, ws, away, concurrency)
    return doc


def clean(doc: dict[str, Any]) -> bool:
    """Nothing lost, duplicated, reordered or refused, in any measurement."""
    keys = ("lost", "duplicated", "reordered", "seq_lost", "seq_duplicated", "seq_reordered",
            "resume_failed", "leaked", "failed_posts", "texts_missing", "texts_repeated")
    parts = [doc[k] for k in ("failover", "memory", "replay") if k in doc]
    return all(not part.get(k) for part in parts for k in keys)
