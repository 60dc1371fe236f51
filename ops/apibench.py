"""`backchannel bench api`: latency and throughput of the directory calls a client makes at
startup, `conversations.list` and `users.list`, in a large workspace (by default 5,000 users
and 500 channels), from several concurrent clients, through the real path (HTTP, the
webapp's auth, rate limits, SQL).

The workspace is built through the product: the seed for the users, `conversations.create`
and `conversations.invite` for the channels (one in ten private), each channel created by
one of the measuring clients (so each client sees its own private channels too) and given
``members`` other users. ``--team`` measures an existing workspace instead: the clients are
new users added to it with the seed, and nothing else is created.

Each phase is one listing kind; every client first lists once (warm-up, not measured), then
``rounds`` times, all clients at once. A listing follows ``next_cursor`` to the end, as SDKs
do; latencies are per page (one request) and per listing (every page). A 429 is obeyed
(Retry-After) and counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import trio

from cluster import settings as settings_mod
from cluster.settings import Settings
from ops import cluster, progress
from ops.bench import pct
from ops.errors import ClusterError

BUILD_CONCURRENCY = 8  # requests in flight while building: the machine has 2 cores
PRIVATE_EVERY = 10  # one channel in ten is private
PHASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    # phase -> (method, the list in the reply, arguments)
    "conversations_list": ("conversations.list", "channels",
                           {"types": "public_channel,private_channel", "limit": 200}),
    "users_list": ("users.list", "members", {"limit": 200}),
    "users_list_default": ("users.list", "members", {}),
}


@dataclasses.dataclass
class Options:
    users: int = 5000
    channels: int = 500
    members: int = 10
    clients: int = 8
    rounds: int = 5
    team: str | None = None
    own_cluster: bool = False
    progress: bool = False


@dataclasses.dataclass
class Phase:
    """What one listing kind measured, over every client."""

    pages: list[float] = dataclasses.field(default_factory=list)  # ms each
    listings: list[float] = dataclasses.field(default_factory=list)  # ms each
    items: list[int] = dataclasses.field(default_factory=list)  # per listing
    pages_per_listing: set[int] = dataclasses.field(default_factory=set)
    duplicates: int = 0  # items a listing returned twice
    inconsistent: int = 0  # clients whose listings did not all return the same items
    ratelimited: int = 0
    seconds: float = 0.0

    def doc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"method": method, "params": params,
                "items": {"min": min(self.items), "max": max(self.items)},
                "pages_per_listing": sorted(self.pages_per_listing),
                "page_ms": _stats(self.pages), "listing_ms": _stats(self.listings),
                "requests_per_s": round(len(self.pages) / self.seconds, 1),
                "listings_per_s": round(len(self.listings) / self.seconds, 2),
                "duplicates": self.duplicates, "inconsistent": self.inconsistent,
                "ratelimited": self.ratelimited}


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {"p50": round(pct(values, 0.5), 2), "p99": round(pct(values, 0.99), 2),
            "max": round(max(values), 2), "n": len(values)}


class Api:
    """Calls as a client makes them: a token, JSON bodies, Slack's errors raised."""

    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self.http, self.base = http, base

    async def call(self, method: str, token: str, phase: Phase | None = None,
                   **body: Any) -> dict[str, Any]:
        while True:
            started = time.perf_counter()
            response = await self.http.post(self.base + method, json=body,
                                            headers={"Authorization": f"Bearer {token}"})
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code == 429:
                if phase is not None:
                    phase.ratelimited += 1
                await trio.sleep(int(response.headers.get("Retry-After", "1")))
                continue
            reply = response.json()
            if not reply.get("ok"):
                raise ClusterError(f"bench api: {method} answered {reply.get('error')}")
            if phase is not None:
                phase.pages.append(elapsed)
            return reply


# --- building the workspace ---------------------------------------------------------------

async def _each(items: list[Any], fn: Any, label: str, show: bool) -> None:
    """``fn(item)`` for every item, BUILD_CONCURRENCY at a time."""
    queue = iter(items)
    done = 0
    with progress.bar(label, len(items), show) as update:
        async def worker() -> None:
            nonlocal done
            for item in queue:
                await fn(item)
                done += 1
                update(done)

        async with trio.open_nursery() as nursery:
            for _ in range(BUILD_CONCURRENCY):
                nursery.start_soon(worker)


async def _channels(api: Api, users: list[dict[str, Any]], clients: list[dict[str, Any]],
                    opts: Options) -> None:
    """``opts.channels`` channels, created round-robin by the clients, each with
    ``opts.members`` other users invited (spread evenly over the workspace)."""
    tag = secrets.token_hex(3)
    others = [u for u in users if u not in clients] or users

    async def build(i: int) -> None:
        owner = clients[i % len(clients)]
        reply = await api.call("conversations.create", owner["token"],
                               name=f"bench-{tag}-{i}", is_private=i % PRIVATE_EVERY == 0)
        invited = {others[(i * opts.members + k) % len(others)]["id"]
                   for k in range(opts.members)} - {owner["id"]}
        if invited:
            await api.call("conversations.invite", owner["token"],
                           channel=reply["channel"]["id"], users=",".join(sorted(invited)))

    await _each(list(range(opts.channels)), build, "channels", opts.progress)


def _build(run_dir: Path, opts: Options) -> tuple[dict[str, Any], dict[str, float] | None]:
    """The workspace and the clients' users; how long building took (None: reused)."""
    if opts.team is not None:
        ws = cluster.seed(run_dir, opts.clients, team=opts.team)
        return {**ws, "clients": ws["users"]}, None
    started = time.perf_counter()
    ws = cluster.seed(run_dir, max(opts.users, opts.clients), team_name="api-bench")
    seeded = time.perf_counter()
    clients = ws["users"][:opts.clients]

    async def channels() -> None:
        async with _http(opts.clients) as http:
            await _channels(Api(http, ws["webapp_url"]), ws["users"], clients, opts)

    _trio(channels)
    return {**ws, "clients": clients}, {
        "seed_s": round(seeded - started, 2),
        "channels_s": round(time.perf_counter() - seeded, 2)}


def _trio(fn: Any, *args: Any) -> Any:
    """trio.run, with a refusal inside a nursery raised as itself (the CLI reports a
    ClusterError in one line; a group of them would be a traceback)."""
    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:
        refused = group.subgroup(ClusterError)
        while refused is not None and isinstance(refused, BaseExceptionGroup):
            refused = refused.exceptions[0]
        if refused is None:
            raise
        raise refused from group


# --- measuring ---------------------------------------------------------------------------

def _http(clients: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(120, pool=None),
                             limits=httpx.Limits(max_connections=max(clients, BUILD_CONCURRENCY)))


async def _listing(api: Api, token: str, method: str, key: str, params: dict[str, Any],
                   phase: Phase | None) -> tuple[list[str], int]:
    """One full listing: the ids in the order listed, and the pages it took."""
    seen: list[str] = []
    cursor, pages = "", 0
    while True:
        body = {**params, "cursor": cursor} if cursor else params
        reply = await api.call(method, token, phase, **body)
        pages += 1
        seen += [item["id"] for item in reply[key]]
        cursor = reply.get("response_metadata", {}).get("next_cursor") or ""
        if not cursor:
            return seen, pages


async def _phase(api: Api, tokens: list[str], name: str, rounds: int) -> dict[str, Any]:
    method, key, params = PHASES[name]
    phase = Phase()

    async def client(token: str) -> None:
        listed: set[frozenset[str]] = set()
        for _ in range(rounds):
            started = time.perf_counter()
            ids, pages = await _listing(api, token, method, key, params, phase)
            phase.listings.append((time.perf_counter() - started) * 1000)
            distinct = frozenset(ids)
            listed.add(distinct)
            phase.items.append(len(distinct))
            phase.pages_per_listing.add(pages)
            phase.duplicates += len(ids) - len(distinct)
        phase.inconsistent += len(listed) > 1

    async def warm_up(token: str) -> None:
        await _listing(api, token, method, key, params, None)

    async with trio.open_nursery() as warm:  # not measured: connections, caches
        for token in tokens:
            warm.start_soon(warm_up, token)
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for token in tokens:
            nursery.start_soon(client, token)
    phase.seconds = time.perf_counter() - started
    return phase.doc(method, params)


async def _measure(base: str, tokens: list[str], rounds: int) -> dict[str, Any]:
    async with _http(len(tokens)) as http:
        api = Api(http, base)
        return {name: await _phase(api, tokens, name, rounds) for name in PHASES}


# --- the command -------------------------------------------------------------------------

@contextlib.contextmanager
def own_cluster(config: str | None) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A throwaway cluster (its own database and Redis prefix, a temporary run dir), stopped
    and wiped afterwards, whatever happens. Yields its run dir and a description."""
    import tempfile

    tag = secrets.token_hex(4)
    settings = dataclasses.replace(settings_mod.load(config),
                                   db_prefix=f"backchannelbench_{tag}",
                                   redis_prefix=f"bcbench:{tag}:")
    with tempfile.TemporaryDirectory(prefix="backchannel-bench-") as tmp:
        run_dir = Path(tmp)
        try:
            cluster.start(settings, run_dir)
            yield run_dir, {"own": True, "db_prefix": settings.db_prefix,
                            "redis_prefix": settings.redis_prefix}
        finally:
            cluster.stop(run_dir)
            _wipe(settings)


def _wipe(settings: Settings) -> None:
    """Drop the throwaway cluster's databases and Redis keys."""
    import asyncio

    import redis

    from webapp.schema import drop_all

    asyncio.run(drop_all(settings))
    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(client.scan_iter(match=settings.redis_prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def run(run_dir: Path, opts: Options, config: str | None = None) -> dict[str, Any]:
    """Against the run dir's cluster, or (``opts.own_cluster``) a throwaway one."""
    if opts.own_cluster:
        with own_cluster(config) as (own, about):
            return {**_run(own, opts), "cluster": about}
    cluster.require_state(run_dir)
    return {**_run(run_dir, opts), "cluster": {"own": False, "run_dir": str(run_dir)}}


def _run(run_dir: Path, opts: Options) -> dict[str, Any]:
    ws, build = _build(run_dir, opts)
    tokens = [u["token"] for u in ws["clients"]]
    # what else the machine was doing: on 2 cores other work moves the figures a lot
    load = round(os.getloadavg()[0], 2)
    phases = _trio(_measure, ws["webapp_url"], tokens, opts.rounds)
    return {"webapp_url": ws["webapp_url"], "team": ws["team"]["id"],
            "users": phases["users_list"]["items"]["max"],
            "channels_listed": phases["conversations_list"]["items"],
            "channels_created": 0 if opts.team else opts.channels,
            "members_per_channel": 0 if opts.team else opts.members,
            "clients": len(tokens), "rounds": opts.rounds, "build": build,
            "load_1m_before": load, "cpus": os.cpu_count(), **phases}


def clean(doc: dict[str, Any]) -> bool:
    """Every listing consistent: no item twice, each client the same items every time, and
    users.list the same with and without a limit."""
    same = doc["users_list"]["items"] == doc["users_list_default"]["items"]
    return same and all(doc[name]["duplicates"] == doc[name]["inconsistent"] == 0
                        for name in PHASES)


def text(doc: dict[str, Any]) -> str:
    seen = doc["channels_listed"]
    lines = [f"team {doc['team']}: {doc['users']} users listed, {seen['min']}-{seen['max']} "
             f"channels per client, {doc['clients']} client(s) x {doc['rounds']} round(s) "
             f"(load {doc['load_1m_before']} on {doc['cpus']} CPUs before measuring)"]
    if doc["build"]:
        lines.append(f"built in {doc['build']['seed_s']} s (seed) + "
                     f"{doc['build']['channels_s']} s (channels)")
    for name in PHASES:
        p = doc[name]
        args = " ".join(f"{k}={v}" for k, v in p["params"].items()) or "(default limit)"
        lines.append(
            f"{p['method']} {args}: {p['pages_per_listing']} pages/listing; page p50 "
            f"{p['page_ms']['p50']} ms p99 {p['page_ms']['p99']} ms max "
            f"{p['page_ms']['max']} ms; listing p50 {p['listing_ms']['p50']} ms p99 "
            f"{p['listing_ms']['p99']} ms; {p['requests_per_s']} req/s, "
            f"{p['listings_per_s']} listings/s; ratelimited {p['ratelimited']}")
    return "\n".join(lines)
