"""The resuming client's own bookkeeping (ops/resumer.py), without sockets, and a small run
of `backchannel resume-bench` through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from ops.resumer import ResumingClient, Session, StreamCheck
from tests.conftest import private_cluster


def test_in_order_is_clean():
    check = StreamCheck(start=3, last=3)
    for seq in (4, 5, 6):
        assert check.see(seq) == ""
    assert (check.lost, check.duplicated, check.reordered, check.last) == (0, 0, 0, 6)


def test_a_jump_is_lost_until_the_missing_seqs_arrive_late():
    check = StreamCheck(start=0, last=0)
    assert [check.see(s) for s in (1, 4)] == ["", "jump"]
    assert check.lost == 2
    assert [check.see(s) for s in (2, 3, 3, 4)] == ["reordered", "reordered", "duplicated",
                                                    "duplicated"]
    assert (check.lost, check.reordered, check.duplicated) == (0, 2, 2)


def test_hello_ahead_of_us_is_lost_unless_resume_failed_announces_it():
    check = StreamCheck(start=0, last=5)
    assert check.restart(5) is True
    assert check.restart(9) is False and check.lost == 4
    check.skip_to(9)
    assert (check.lost, check.skipped, check.last) == (0, 4, 9)
    # invalid_position for a future position: the server's live seq is behind ours
    check.skip_to(7)
    assert check.last == 7 and check.see(8) == ""


def client_with_hello(positions: dict[str, int]) -> tuple[ResumingClient, Session]:
    client = ResumingClient("http://x/api/", "t", prefix="p")
    session = Session(time.monotonic(), {})
    client.sessions.append(session)
    client._on_hello({"type": "hello", "positions": positions}, session)
    return client, session


def message(stream: str, seq: int, text: str = "p 1", ts: float | None = None
            ) -> dict[str, Any]:
    return {"type": "message", "channel": stream, "stream": stream, "seq": seq, "text": text,
            "ts": f"{time.time() if ts is None else ts:.6f}"}


def test_client_counts_streams_texts_and_no_access_leaks():
    client, session = client_with_hello({"C1": 10, "U1": 2})
    client._on_event(message("C1", 11, ts=1.0), session)  # committed before hello: replay
    assert session.live_at is None
    client._on_event(message("C1", 12, "p 2"), session)
    assert session.live_at is not None
    client._on_event({"type": "resume_failed", "stream": "C9", "reason": "no_access"}, session)
    client._on_event(message("C9", 1), session)
    client._on_event({"type": "user_typing", "channel": "C1", "user": "U2"}, session)
    assert client.positions() == {"C1": 12, "U1": 2}
    assert [e["stream"] for e in client.leaked] == ["C9"]
    assert client.member.texts["C1"] == {"p 1": 1, "p 2": 1}
    assert client.counts()["received"] == 2 and client.frames[0]["type"] == "user_typing"


def test_resume_bench_refuses_without_a_cluster(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ops.cli", "--run-dir", str(tmp_path),
                          "resume-bench", "--json"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1
    assert json.loads(out.stdout) == {"error": f"no cluster running in {tmp_path}"}


def test_resume_bench_small_run(tmp_path):
    """Kills gateway-1, so a private cluster; small numbers keep it short."""
    with private_cluster(tmp_path, channels=1, gateways=2) as c:
        out = subprocess.run([sys.executable, "-m", "ops.cli", "--run-dir", str(c.run_dir),
                              "resume-bench", "--clients", "5", "--away", "200", "--json"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        doc = json.loads(out.stdout)
        assert doc["victim"] == "gateway-1" and doc["restarted"]["name"] == "gateway-1"
        assert doc["failover"]["clients"] == 5 and doc["memory"]["clients"] == 5
        assert doc["replay"]["events"] == 200 and doc["replay"]["events_per_s"] > 0
        state = json.loads((c.run_dir / "cluster.json").read_text())
        gateways = {p["name"]: p["pid"] for p in state["processes"]
                    if p["role"] == "gateway_server"}
        assert gateways["gateway-1"] == doc["restarted"]["pid"]
