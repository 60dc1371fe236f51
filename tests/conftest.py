"""Shared fixtures: a real cluster of processes (MariaDB and Redis must be running, which
`make test` ensures) on free ports, isolated by a throwaway database and Redis prefix."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cluster.settings import Settings
from ops import cluster as ops_cluster


@dataclasses.dataclass
class Cluster:
    settings: Settings
    run_dir: Path
    state: dict[str, Any]

    @property
    def api(self) -> str:
        """Base URL for slack_sdk: ``http://127.0.0.1:PORT/api/``."""
        return self.state["webapp_url"]

    @property
    def root(self) -> str:
        return self.api.removesuffix("/api/")

    def seed(self, users: int = 3) -> dict[str, Any]:
        """A fresh workspace (users, bot, #general) so tests do not share state."""
        return ops_cluster.seed(self.run_dir, users)

    def processes(self, role: str) -> list[dict[str, Any]]:
        return [p for p in self.state["processes"] if p["role"] == role]

    def internal_headers(self) -> dict[str, str]:
        return {"x-backchannel-internal": self.state_settings().internal_secret}

    def state_settings(self) -> Settings:
        from cluster import settings as settings_mod

        return settings_mod.load(self.state["config"])


def test_settings() -> Settings:
    tag = secrets.token_hex(4)
    return Settings(db_prefix=f"backchanneltest_{tag}", redis_prefix=f"bctest:{tag}:",
                    gap_wait_s=0.2, ring_poll_interval_s=0.2)


def _cleanup(settings: Settings) -> None:
    from webapp.schema import drop_all

    asyncio.run(drop_all(settings))
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(match=settings.redis_prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    settings = test_settings()
    run_dir = tmp_path_factory.mktemp("cluster")
    state = ops_cluster.start(settings, run_dir, ops_cluster.Counts(channels=3, gateways=2))
    try:
        yield Cluster(settings, run_dir, state)
    finally:
        ops_cluster.stop(run_dir)
        _cleanup(settings)


@pytest.fixture(scope="module")
def ws(cluster: Cluster) -> dict[str, Any]:
    """A workspace of three users for one test module (a module may define its own)."""
    return cluster.seed(3)


@pytest.fixture(scope="module")
def other(cluster: Cluster) -> dict[str, Any]:
    """Another workspace, for checking that nothing crosses between workspaces."""
    return cluster.seed(2)


def api_call(cluster: Cluster, method: str, token: str | None = None, **kwargs: Any
             ) -> httpx.Response:
    """POST a JSON body with a Bearer token (sync: for simple assertions)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(cluster.api + method, json=kwargs, headers=headers, timeout=10)


def start_cluster(run_dir: Path, counts: ops_cluster.Counts | None = None,
                  **overrides: Any) -> Cluster:
    """A private cluster with changed settings (the caller stops it with stop_cluster)."""
    settings = dataclasses.replace(test_settings(), **overrides)
    state = ops_cluster.start(settings, run_dir, counts or ops_cluster.Counts(
        channels=2, gateways=1))
    return Cluster(settings, run_dir, state)


def stop_cluster(c: Cluster) -> None:
    ops_cluster.stop(c.run_dir)
    _cleanup(c.settings)


@contextlib.contextmanager
def private_cluster(run_dir: Path, channels: int = 1, gateways: int = 1, standby: int = 0,
                    ring_managers: int = 0, **overrides: Any) -> Iterator[Cluster]:
    """For tests that kill processes or need other settings than the shared cluster."""
    c = start_cluster(run_dir, ops_cluster.Counts(channels=channels, gateways=gateways,
                                                  standby=standby,
                                                  ring_managers=ring_managers), **overrides)
    try:
        yield c
    finally:
        stop_cluster(c)


class RtmSession:
    """A raw RTM WebSocket client: what an SDK does, with helpers to wait for events."""

    def __init__(self, ws: Any, url: str) -> None:
        self.ws = ws
        self.url = url
        self.seen: list[dict[str, Any]] = []
        self.hello_positions: dict[str, int] = {}

    async def next(self, match: Any = None, timeout: float = 10.0) -> dict[str, Any]:
        """The next event satisfying ``match`` (a predicate or a dict of expected fields)."""
        import json

        import trio

        def ok(event: dict[str, Any]) -> bool:
            if match is None:
                return True
            if callable(match):
                return bool(match(event))
            return all(event.get(k) == v for k, v in match.items())

        with trio.fail_after(timeout):
            while True:
                event = json.loads(await self.ws.get_message())
                self.seen.append(event)
                if ok(event):
                    return event

    async def send(self, frame: dict[str, Any]) -> None:
        import json

        await self.ws.send_message(json.dumps(frame))


@contextlib.asynccontextmanager
async def rtm_session(cluster: Cluster, token: str, gateway: str | None = None
                      ) -> AsyncIterator[RtmSession]:
    """rtm.connect, open the socket (optionally on a chosen gateway), wait for hello."""
    from urllib.parse import urlsplit

    from trio_websocket import open_websocket_url

    async with httpx.AsyncClient(timeout=10) as http:
        reply = (await http.post(cluster.api + "rtm.connect",
                                 headers={"Authorization": f"Bearer {token}"})).json()
    assert reply["ok"], reply
    url = reply["url"]
    if gateway is not None:
        url = gateway + url[len(f"ws://{urlsplit(url).netloc}"):]
    async with open_websocket_url(url) as ws:
        session = RtmSession(ws, url)
        hello = await session.next({"type": "hello"})
        session.hello_positions = hello.get("positions", {})
        yield session


def gateway_of(session: RtmSession) -> str:
    from urllib.parse import urlsplit

    return f"ws://{urlsplit(session.url).netloc}"
