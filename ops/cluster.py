"""Start, stop and inspect a local cluster of real processes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from cluster import registry
from cluster import settings as settings_mod
from cluster.ring import RingConfig
from cluster.settings import Settings
from ops.addrfile import read_addr

DEFAULT_RUN_DIR = Path(os.environ.get("BACKCHANNEL_RUN_DIR", Path.cwd() / ".run"))
START_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class Counts:
    webapps: int = 1
    admins: int = 1
    channels: int = 3
    gateways: int = 2
    presence: int = 1


ROLE_PREFIX = {"webapp": "webapp", "admin_server": "admin", "channel_server": "channel",
               "gateway_server": "gateway", "presence_server": "presence"}


class ClusterError(RuntimeError):
    pass


def state_path(run_dir: Path) -> Path:
    return run_dir / "cluster.json"


def load_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads(state_path(run_dir).read_text())
    except (FileNotFoundError, ValueError):
        return None


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


def spawn(run_dir: Path, role: str, name: str, config_path: Path) -> subprocess.Popen:
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    addr = run_dir / f"{name}.addr.json"
    addr.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "ops.cli", "--config", str(config_path), "serve", role,
           "--name", name, "--addr-file", str(addr)]
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


def write_ring(settings: Settings, members: dict[str, str]) -> RingConfig:
    client = redis.Redis.from_url(settings.redis_url)
    key = registry.ring_key(settings.redis_prefix)
    try:
        with client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    config = RingConfig.from_json(pipe.get(key)).with_members(members)
                    pipe.multi()
                    pipe.set(key, config.to_json())
                    pipe.execute()
                    return config
                except redis.WatchError:
                    continue
    finally:
        client.close()


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


def start(settings: Settings, run_dir: Path, counts: Counts = Counts()) -> dict[str, Any]:
    """Schema, then channel servers and the ring, then everything else; waits for health."""
    from webapp.schema import ensure_schema

    asyncio.run(ensure_schema(settings))
    settings, config_path = prepare_settings(settings, run_dir)
    procs: dict[str, subprocess.Popen] = {}
    try:
        channels = {f"channel-{i}": spawn(run_dir, "channel_server", f"channel-{i}", config_path)
                    for i in range(1, counts.channels + 1)}
        procs.update(channels)
        infos = wait_addrs(run_dir, channels)
        write_ring(settings, {n: i["url"] for n, i in sorted(infos.items())})
        rest: dict[str, subprocess.Popen] = {}
        for role, count in (("presence_server", counts.presence), ("admin_server", counts.admins),
                            ("webapp", counts.webapps), ("gateway_server", counts.gateways)):
            for i in range(1, count + 1):
                name = f"{ROLE_PREFIX[role]}-{i}"
                rest[name] = spawn(run_dir, role, name, config_path)
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
    state_path(run_dir).write_text(json.dumps(state, indent=2))
    return state


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def stop(run_dir: Path, timeout: float = 10.0) -> int:
    state = load_state(run_dir)
    if state is None:
        return 0
    pids = [p["pid"] for p in state["processes"]]
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
    state_path(run_dir).unlink(missing_ok=True)
    return len(pids)


def status(run_dir: Path) -> dict[str, Any] | None:
    state = load_state(run_dir)
    if state is None:
        return None
    settings = settings_mod.load(state["config"])
    processes = []
    for p in state["processes"]:
        up = alive(p["pid"])
        processes.append({"name": p["name"], "role": p["role"], "pid": p["pid"],
                          "address": p["url"], "healthy": up and healthy(p)})
    try:
        ring = read_ring(settings)
        ring_doc = {"epoch": ring.epoch, "members": sorted(ring.members)}
    except redis.RedisError:
        ring_doc = {"epoch": None, "members": [], "error": "redis unreachable"}
    return {"webapp_url": state["webapp_url"], "processes": processes, "ring": ring_doc}


def seed(run_dir: Path, users: int, team_name: str | None = None) -> dict[str, Any]:
    state = load_state(run_dir)
    if state is None:
        raise ClusterError("no cluster running; start one with `backchannel up`")
    settings = settings_mod.load(state["config"])
    base = state["webapp_url"].removesuffix("/api/")
    body: dict[str, Any] = {"users": users}
    if team_name:
        body["team_name"] = team_name
    resp = httpx.post(base + "/internal/seed", json=body, timeout=max(30.0, users * 0.2),
                      headers={"x-backchannel-internal": settings.internal_secret})
    doc = resp.json()
    if not doc.get("ok"):
        raise ClusterError(f"seed failed: {doc.get('error')}")
    doc.pop("ok")
    return {"webapp_url": state["webapp_url"], **doc}
