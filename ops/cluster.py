"""Start, stop and inspect a local cluster of real processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pymysql
import redis

from cluster import registry
from cluster import settings as settings_mod
from cluster.ring import Member, RingConfig
from cluster.settings import Settings
from ops.addrfile import read_addr
from ops.errors import ClusterError, NoCluster  # callers catch cluster.ClusterError
from ops.isolation import check_prefix_free, describe_db_error

DEFAULT_RUN_DIR = Path(os.environ.get("BACKCHANNEL_RUN_DIR", Path.cwd() / ".run"))
START_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class Counts:
    webapps: int = 1
    admins: int = 1
    channels: int = 3
    gateways: int = 2
    presence: int = 1
    standby: int = 0  # channel servers started and leased but kept off the ring
    # `backchannel up` asks for one; test clusters opt in, so that a test that kills a
    # channel server decides itself whether something repairs the ring behind its back
    ring_managers: int = 0


ROLE_PREFIX = {"webapp": "webapp", "admin_server": "admin", "channel_server": "channel",
               "gateway_server": "gateway", "presence_server": "presence",
               "ring_manager": "ring-manager"}


def state_path(run_dir: Path) -> Path:
    return run_dir / "cluster.json"


def load_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads(state_path(run_dir).read_text())
    except (FileNotFoundError, ValueError):
        return None


def require_state(run_dir: Path) -> dict[str, Any]:
    state = load_state(run_dir)
    if state is None:
        raise NoCluster(run_dir)
    return state


def run_settings(state: dict[str, Any]) -> Settings:
    """The settings `up` wrote for this run dir's processes."""
    return settings_mod.load(state["config"])


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    tmp = run_dir / "cluster.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, state_path(run_dir))


@contextlib.contextmanager
def _state_lock(run_dir: Path) -> Iterator[None]:
    # two `ring` commands on one run dir must not lose each other's process entries
    with open(run_dir / "cluster.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def update_processes(run_dir: Path,
                     change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Read-modify-write cluster.json's process list under a lock."""
    with _state_lock(run_dir):
        state = require_state(run_dir)
        state["processes"] = change(state["processes"])
        save_state(run_dir, state)


def add_process(run_dir: Path, record: dict[str, Any]) -> None:
    update_processes(run_dir, lambda ps: [p for p in ps if p["name"] != record["name"]]
                     + [record])


def forget_process(run_dir: Path, name: str) -> None:
    update_processes(run_dir, lambda ps: [p for p in ps if p["name"] != name])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not alive
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def spawn(run_dir: Path, role: str, name: str, config_path: Path,
          standby: bool = False) -> subprocess.Popen:
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    addr = run_dir / f"{name}.addr.json"
    addr.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "ops.cli", "--config", str(config_path), "serve", role,
           "--name", name, "--addr-file", str(addr)] + (["--standby"] if standby else [])
    with open(logs / f"{name}.log", "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_addrs(run_dir: Path, procs: dict[str, subprocess.Popen]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + START_TIMEOUT_S
    found: dict[str, dict[str, Any]] = {}
    while len(found) < len(procs):
        for name, proc in procs.items():
            if name in found:
                continue
            info = read_addr(run_dir / f"{name}.addr.json")
            if info is not None:
                found[name] = info
            elif proc.poll() is not None:
                raise ClusterError(f"{name} exited with {proc.returncode}; see "
                                   f"{run_dir / 'logs' / (name + '.log')}")
        if time.monotonic() > deadline:
            missing = sorted(set(procs) - set(found))
            raise ClusterError(f"not listening after {START_TIMEOUT_S}s: {missing}")
        time.sleep(0.05)
    return found


def health_url(info: dict[str, Any]) -> str:
    return info["http_url"].rstrip("/") + "/health"


def healthy(info: dict[str, Any], timeout: float = 2.0) -> bool:
    try:
        return httpx.get(health_url(info), timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(infos: list[dict[str, Any]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    pending = list(infos)
    while pending:
        pending = [i for i in pending if not healthy(i)]
        if pending and time.monotonic() > deadline:
            raise ClusterError(f"unhealthy: {[i['name'] for i in pending]}")
        if pending:
            time.sleep(0.1)


RingChange = Callable[[RingConfig], RingConfig | None]


def update_ring(settings: Settings, change: RingChange) -> tuple[RingConfig, RingConfig]:
    """Apply ``change`` to the ring in Redis with compare-and-set (WATCH/MULTI), retrying on
    a concurrent write, so that a writer such as the ring manager never loses an update.
    ``change`` sees the current config each try; it returns the new one (epoch bumped, as
    RingConfig.with_* do), None to leave the ring alone, or raises to abort.
    Returns (before, after)."""
    client = redis.Redis.from_url(settings.redis_url)
    key = registry.ring_key(settings.redis_prefix)
    try:
        with client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    before = RingConfig.from_json(pipe.get(key))
                    after = change(before)
                    if after is None:
                        pipe.unwatch()
                        return before, before
                    pipe.multi()
                    pipe.set(key, after.to_json())
                    pipe.execute()
                    return before, after
                except redis.WatchError:
                    continue
    finally:
        client.close()


def write_ring(settings: Settings,
               change: RingChange | Mapping[str, Member | str]) -> RingConfig:
    """``update_ring`` returning the new config; a mapping replaces every member."""
    if isinstance(change, Mapping):
        members = dict(change)
        return update_ring(settings, lambda config: config.with_members(members))[1]
    return update_ring(settings, change)[1]


def read_ring(settings: Settings) -> RingConfig:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return RingConfig.from_json(client.get(registry.ring_key(settings.redis_prefix)))
    finally:
        client.close()


def prepare_settings(settings: Settings, run_dir: Path) -> tuple[Settings, Path]:
    if not settings.internal_secret:
        settings = dataclasses.replace(settings, internal_secret=secrets.token_urlsafe(32))
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "settings.toml"
    config_path.write_text(settings_mod.to_toml(settings))
    os.chmod(config_path, 0o600)
    return settings, config_path


def ensure_database(settings: Settings) -> None:
    """Create the schema; a database the SQL user may not use is a one-line error."""
    from webapp.schema import ensure_schema

    try:
        asyncio.run(ensure_schema(settings))
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        explained = describe_db_error(settings, code, message)
        if explained is None:
            raise
        raise ClusterError(explained) from None


def _spawn_all(run_dir: Path, config_path: Path, role: str, names: list[str],
               standby: bool = False) -> dict[str, subprocess.Popen]:
    return {name: spawn(run_dir, role, name, config_path, standby) for name in names}


def _names(role: str, first: int, count: int) -> list[str]:
    return [f"{ROLE_PREFIX[role]}-{i}" for i in range(first, first + count)]


def start(settings: Settings, run_dir: Path, counts: Counts = Counts(),
          own_pids: Collection[int] = ()) -> dict[str, Any]:
    """Checks (Redis prefix free, schema), then channel servers and the ring, then
    everything else; waits for health. ``own_pids``: this run dir's previous processes,
    whose leases may still be live for a moment after they were stopped."""
    check_prefix_free(settings, own_pids)
    ensure_database(settings)
    settings, config_path = prepare_settings(settings, run_dir)
    procs: dict[str, subprocess.Popen] = {}
    try:
        ring_names = _names("channel_server", 1, counts.channels)
        procs.update(_spawn_all(run_dir, config_path, "channel_server", ring_names))
        procs.update(_spawn_all(run_dir, config_path, "channel_server",
                                _names("channel_server", counts.channels + 1, counts.standby),
                                standby=True))
        infos = wait_addrs(run_dir, procs)
        write_ring(settings, {n: infos[n]["url"] for n in sorted(ring_names)})
        rest: dict[str, subprocess.Popen] = {}
        # ring managers last: the ring they watch over exists by then
        for role, count in (("presence_server", counts.presence), ("admin_server", counts.admins),
                            ("webapp", counts.webapps), ("gateway_server", counts.gateways),
                            ("ring_manager", counts.ring_managers)):
            rest.update(_spawn_all(run_dir, config_path, role, _names(role, 1, count)))
        procs.update(rest)
        infos.update(wait_addrs(run_dir, rest))
        wait_healthy(list(infos.values()))
    except BaseException:
        for proc in procs.values():
            _terminate(proc.pid)
        raise
    webapp = next(i for i in infos.values() if i["role"] == "webapp")
    state = {"webapp_url": webapp["webapp_url"], "config": str(config_path),
             "processes": [{**infos[n], "pid": procs[n].pid} for n in procs]}
    save_state(run_dir, state)
    return state


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def stop_pids(pids: Collection[int], timeout: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout`` for a clean exit, then SIGKILL what is left."""
    for pid in pids:
        _terminate(pid)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def stop(run_dir: Path, timeout: float = 10.0) -> int:
    state = load_state(run_dir)
    if state is None:
        return 0
    pids = [p["pid"] for p in state["processes"]]
    stop_pids(pids, timeout)
    state_path(run_dir).unlink(missing_ok=True)
    return len(pids)


def status(run_dir: Path) -> dict[str, Any] | None:
    """See ops.views.status."""
    from ops.views import status as status_doc

    return status_doc(run_dir)


def seed(run_dir: Path, users: int, team_name: str | None = None,
         team: str | None = None) -> dict[str, Any]:
    """A new workspace with ``users`` users, a bot and #general; with ``team`` (a team id),
    that many more users for that existing workspace (they join its #general)."""
    state = require_state(run_dir)
    settings = run_settings(state)
    base = state["webapp_url"].removesuffix("/api/")
    body: dict[str, Any] = {"users": users}
    if team_name:
        body["team_name"] = team_name
    if team:
        body["team_id"] = team
    resp = httpx.post(base + "/internal/seed", json=body, timeout=max(30.0, users * 0.2),
                      headers={"x-backchannel-internal": settings.internal_secret})
    doc = resp.json()
    if not doc.get("ok"):
        raise ClusterError(f"seed failed: {doc.get('error')}")
    doc.pop("ok")
    return {"webapp_url": state["webapp_url"], **doc}
