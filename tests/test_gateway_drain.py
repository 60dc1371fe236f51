"""`backchannel gateway drain` end to end: a private cluster with two gateways, 20 RTM
clients on the one being drained, and the CLI run as a subprocess so that exit codes and
JSON are the ones a user gets. What is checked is what the clients see: `goodbye` then a
close, spread over the window, and fresh `rtm.connect` answers that never point back."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio
from trio_websocket import CloseReason, ConnectionClosed, HandshakeError, open_websocket_url

from ops import cluster as ops_cluster
from ops.leases import live_leases
from tests.conftest import Cluster, private_cluster, rtm_session

WINDOW_S = 3.0
USERS = 5
SOCKETS_PER_USER = 4  # 20 clients on the drained gateway
RECONNECTS = 50


@dataclasses.dataclass
class Cli:
    code: int
    doc: Any
    stderr: str


@dataclasses.dataclass
class Seen:
    """One client's view of the drain."""

    goodbye_at: float | None = None
    closed_at: float | None = None
    reason: CloseReason | None = None
    reconnect_url: str | None = None


def run_cli(run_dir: Path, *args: str) -> Cli:
    cmd = [sys.executable, "-m", "ops.cli", "--run-dir", str(run_dir), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    doc = json.loads(out.stdout) if "--json" in args and out.stdout.strip() else None
    return Cli(out.returncode, doc, out.stderr)


async def cli(run_dir: Path, *args: str) -> Cli:
    """In a thread, so that the RTM clients keep reading meanwhile."""
    return await trio.to_thread.run_sync(lambda: run_cli(run_dir, *args))


def start_gateway(c: Cluster, name: str) -> tuple[subprocess.Popen, dict[str, Any]]:
    """A gateway of our own (recorded in cluster.json like `up` does): holding its Popen is
    what lets the test read the exit status of the drained process."""
    proc = ops_cluster.spawn(c.run_dir, "gateway_server", name, Path(c.state["config"]))
    try:
        info = ops_cluster.wait_addrs(c.run_dir, {name: proc})[name]
        ops_cluster.wait_healthy([info])
    except BaseException:
        proc.kill()
        raise
    ops_cluster.add_process(c.run_dir, {**info, "pid": proc.pid})
    return proc, info


def health(info: dict[str, Any]) -> dict[str, Any]:
    return httpx.get(info["http_url"] + "/health", timeout=5).json()


def post_drain(c: Cluster, info: dict[str, Any], body: bytes,
               headers: dict[str, str] | None = None) -> httpx.Response:
    headers = c.internal_headers() if headers is None else headers
    return httpx.post(info["http_url"] + "/drain", content=body, timeout=10,
                      headers={"content-type": "application/json", **headers})


def gateway_leases(c: Cluster) -> set[str]:
    return set(live_leases(c.state_settings()).get("gateway_server", {}))


def netloc(url: str) -> str:
    return urlsplit(url).netloc


async def rtm_url(http: httpx.AsyncClient, c: Cluster, token: str) -> str | None:
    reply = (await http.post(c.api + "rtm.connect",
                             headers={"Authorization": f"Bearer {token}"})).json()
    return reply.get("url") if reply.get("ok") else None


async def test_gateway_drain(tmp_path):
    with private_cluster(tmp_path, channels=1, gateways=1) as c:
        proc, drained = start_gateway(c, "gateway-2")
        try:
            ws = c.seed(users=USERS)
            check_bad_drain_requests(c, drained)
            await check_usage_errors(c)
            await check_drain(c, drained, [u["token"] for u in ws["users"]])
            assert proc.wait(timeout=10) == 0  # it exited on its own, cleanly
            await check_last_gateway(c)
            await check_empty_drain(c)
            await check_interrupted_drain(c)
        finally:
            if proc.poll() is None:
                proc.kill()


def check_bad_drain_requests(c: Cluster, info: dict[str, Any]) -> None:
    assert post_drain(c, info, b'{"window_s": 1}', {}).status_code == 403
    wrong = {"x-backchannel-internal": "not-the-secret"}
    assert post_drain(c, info, b'{"window_s": 1}', wrong).status_code == 403
    for body in (b'{"window_s": -1}', b'{"window_s": 600.5}', b'{"window_s": "2"}',
                 b'{"window_s": true}', b'{"window_s": null}', b'{"window_s": NaN}',
                 b'{"window_s": 1e999}', b"nope", b"[1]", b"", b'"x"'):
        resp = post_drain(c, info, body)
        assert resp.status_code == 400, body
        assert resp.json() == {"ok": False, "error": "invalid_arguments"}, body
    assert health(info)["draining"] is False
    assert "gateway-2" in gateway_leases(c)


async def check_usage_errors(c: Cluster) -> None:
    unknown = await cli(c.run_dir, "gateway", "drain", "gateway-9", "--json")
    assert unknown.code == 2 and "gateway-9" in unknown.doc["error"], unknown
    assert "gateway-1" in unknown.doc["error"]  # it lists the gateways there are
    not_gateway = await cli(c.run_dir, "gateway", "drain", "channel-1")
    assert not_gateway.code == 2 and "not a gateway" in not_gateway.stderr, not_gateway
    bad_window = await cli(c.run_dir, "gateway", "drain", "gateway-2", "--window", "-1")
    assert bad_window.code == 2, bad_window


async def check_drain(c: Cluster, info: dict[str, Any], tokens: list[str]) -> None:
    gateway = info["url"]
    seen = [Seen() for _ in range(len(tokens) * SOCKETS_PER_USER)]
    probes: dict[str, Any] = {}
    with trio.fail_after(120):
        out = await drain_with_clients(c, info, tokens, seen, [0], trio.Event(), probes)
    assert out.code == 0, (out.stderr, out.doc)
    assert set(out.doc) == {"gateway", "clients", "window_s", "seconds", "stopped"}
    assert out.doc["gateway"] == "gateway-2" and out.doc["clients"] == len(seen)
    assert out.doc["window_s"] == WINDOW_S and out.doc["stopped"] is True
    assert out.doc["seconds"] >= WINDOW_S / 2
    check_clients(seen, netloc(gateway))
    check_probes(probes, netloc(gateway))
    state = ops_cluster.load_state(c.run_dir)
    assert state is not None and "gateway-2" not in {p["name"] for p in state["processes"]}
    assert "gateway-2" not in gateway_leases(c)
    status = await cli(c.run_dir, "status", "--json")
    assert status.code == 0 and status.doc["problems"] == [], status


async def drain_with_clients(c: Cluster, info: dict[str, Any], tokens: list[str],
                             seen: list[Seen], ready: list[int], first_goodbye: trio.Event,
                             probes: dict[str, Any]) -> Cli:
    """Connect every client to the gateway, then run the drain command while they read."""
    async with trio.open_nursery() as nursery:
        for i, s in enumerate(seen):
            nursery.start_soon(hold, c, tokens[i % len(tokens)], info["url"], s, ready,
                               first_goodbye)
        with trio.fail_after(30):
            while ready[0] < len(seen) or health(info)["clients"] < len(seen):
                await trio.sleep(0.05)
        nursery.start_soon(probe_during_drain, c, info, tokens[0], first_goodbye, probes)
        out = await cli(c.run_dir, "gateway", "drain", "gateway-2",
                        "--window", str(WINDOW_S), "--json")
    return out


async def hold(c: Cluster, token: str, gateway: str, seen: Seen, ready: list[int],
               first_goodbye: trio.Event) -> None:
    """One RTM client on ``gateway``: reads until the close, then, as a client told
    `goodbye` does, asks rtm.connect where to go next."""
    async with rtm_session(c, token, gateway=gateway) as session:
        ready[0] += 1
        try:
            while True:
                event = json.loads(await session.ws.get_message())
                if event.get("type") == "goodbye" and seen.goodbye_at is None:
                    assert event == {"type": "goodbye", "source": "gateway_server"}
                    seen.goodbye_at = trio.current_time()
                    first_goodbye.set()
        except ConnectionClosed as exc:
            seen.closed_at, seen.reason = trio.current_time(), exc.reason
    async with httpx.AsyncClient(timeout=10) as http:
        seen.reconnect_url = await rtm_url(http, c, token)


async def probe_during_drain(c: Cluster, info: dict[str, Any], token: str,
                             first_goodbye: trio.Event, probes: dict[str, Any]) -> None:
    """Once the first client was told goodbye: the gateway says it drains, a second drain
    request is answered as such, a new socket is refused, and rtm.connect, asked over and
    over (during the drain and, if it is quick, after), never hands the gateway out."""
    with trio.fail_after(30):
        await first_goodbye.wait()
    probes["health"] = await trio.to_thread.run_sync(health, info)
    again = await trio.to_thread.run_sync(post_drain, c, info, b'{"window_s": 5}')
    probes["again"] = again.json()
    urls: list[str] = []
    probes["urls"] = urls
    async with httpx.AsyncClient(timeout=10) as http:
        url = await rtm_url(http, c, token)
        assert url is not None
        try:
            async with open_websocket_url(info["url"] + url[len("ws://") + len(netloc(url)):]):
                probes["refused"] = False
        except HandshakeError:  # the listener is closed (or, a moment before, a 503)
            probes["refused"] = True
        for _ in range(RECONNECTS):
            urls.append(await rtm_url(http, c, token) or "error")


def check_clients(seen: list[Seen], drained: str) -> None:
    for s in seen:
        assert s.goodbye_at is not None and s.closed_at is not None, s
        assert s.goodbye_at <= s.closed_at, s
        assert s.reason is not None and s.reason.code == 1001, s
        assert s.reason.reason == "draining", s
        assert s.reconnect_url is not None and netloc(s.reconnect_url) != drained, s
    closes = sorted(s.closed_at for s in seen if s.closed_at is not None)
    assert closes[-1] - closes[0] >= WINDOW_S / 2, closes  # spread, not all at once


def check_probes(probes: dict[str, Any], drained: str) -> None:
    assert probes["health"]["draining"] is True
    assert probes["again"]["ok"] is True and probes["again"]["already_draining"] is True
    assert probes["again"]["window_s"] == WINDOW_S  # the first request's window stands
    assert probes["refused"] is True
    assert len(probes["urls"]) == RECONNECTS and "error" not in probes["urls"], probes
    assert all(netloc(u) != drained for u in probes["urls"])


async def check_last_gateway(c: Cluster) -> None:
    (last,) = c.processes("gateway_server")
    refused = await cli(c.run_dir, "gateway", "drain", "gateway-1", "--json")
    assert refused.code == 1 and "last live gateway" in refused.doc["error"], refused
    assert "--force" in refused.doc["error"]
    assert health(last)["draining"] is False and "gateway-1" in gateway_leases(c)


async def check_empty_drain(c: Cluster) -> None:
    """No clients, no window: the gateway is gone at once, yet its answer came first."""
    proc, _ = start_gateway(c, "gateway-3")
    try:
        out = await cli(c.run_dir, "gateway", "drain", "gateway-3", "--window", "0", "--json")
        assert out.code == 0, out
        assert out.doc["clients"] == 0 and out.doc["window_s"] == 0
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


async def check_interrupted_drain(c: Cluster) -> None:
    """A command that stops watching (here: a timeout) leaves a gateway that finishes its
    drain anyway; `status` does not call it a problem, and a second command forgets it."""
    (last,) = c.processes("gateway_server")
    out = await cli(c.run_dir, "gateway", "drain", "gateway-1", "--force", "--window", "3",
                    "--timeout", "0.2", "--json")
    assert out.code == 1 and "still runs" in out.doc["error"], out
    assert gateway_leases(c) == set()
    with trio.fail_after(30):
        while ops_cluster.alive(last["pid"]):
            await trio.sleep(0.05)
    status = await cli(c.run_dir, "status", "--json")
    (entry,) = [p for p in status.doc["processes"] if p["name"] == "gateway-1"]
    assert entry["draining"] is True and status.doc["problems"] == [], status
    again = await cli(c.run_dir, "gateway", "drain", "gateway-1", "--json")
    assert again.code == 0, again
    assert again.doc["window_s"] == 3 and again.doc["clients"] == 0
    state = ops_cluster.load_state(c.run_dir)
    assert state is not None and "gateway-1" not in {p["name"] for p in state["processes"]}
