"""The client side of `bench fanout` (ops/fanoutbench.py): M RTM members and one sender, in
one asyncio process.

Members are picows listeners: picows parses WebSocket frames in Cython and calls
``on_ws_frame`` once per frame, so a member costs a few microseconds per message (orjson
included). trio-websocket's per-message Python cost caps one process near 20k messages/s,
below what the cluster is asked to reach. The sender posts with httpx over a few pooled
connections.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import picows
from picows import WSFrame, WSListener, WSMsgType, WSTransport

from ops.bench import pct
from ops.errors import ClusterError

CONNECT_ATTEMPTS = 5  # per member: a fresh rtm.connect each time
HELLO_TIMEOUT_S = 30.0
UNPACED_IN_FLIGHT = 16  # posts in flight when the rate is 0: enough to keep a one-core cluster busy
PACED_MAX_IN_FLIGHT = 256  # a paced sender never holds more: the offered rate then drops
TEXT_PREFIX = "fb "
TEXT = WSMsgType.TEXT
CONTINUATION = WSMsgType.CONTINUATION
CLOSE = WSMsgType.CLOSE
PREFIX_LEN = len(TEXT_PREFIX)
INDEX_DIGITS = 6
MAX_MESSAGES = 10**INDEX_DIGITS
INDEX_END = PREFIX_LEN + INDEX_DIGITS
_loads = orjson.loads
_now = time.perf_counter_ns


def bench_text(i: int, size: int) -> str:
    """``fb 000042 xxx…``, ``size`` characters in all (at least the prefix and index). A
    fixed-width index: the receiving side slices it without searching."""
    head = f"{TEXT_PREFIX}{i:0{INDEX_DIGITS}d} "
    return head + "x" * max(0, size - len(head))


def latency_stats(values_ns: list[int]) -> dict[str, Any]:
    if not values_ns:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    ms = sorted(v / 1e6 for v in values_ns)
    return {"p50": round(pct(ms, 0.5), 2), "p99": round(pct(ms, 0.99), 2),
            "max": round(ms[-1], 2), "n": len(ms)}


class Crowd:
    """Every member; the totals are sums over them."""

    def __init__(self, messages: int) -> None:
        self.messages = messages
        self.members: list[Member] = []

    # connecting

    async def connect_all(self, api: str, tokens: list[str], concurrency: int) -> None:
        """rtm.connect, open the socket, wait for hello: ``concurrency`` members at once."""
        gate = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            async def one(token: str) -> Member:
                async with gate:
                    return await _connect(http, api, token, self, CONNECT_ATTEMPTS,
                                          HELLO_TIMEOUT_S)

            self.members = list(await asyncio.gather(*(one(t) for t in tokens)))

    def unique(self) -> int:
        """First receipts of a bench message, over every member."""
        return sum(m.unique for m in self.members)

    def per_gateway(self) -> dict[str, int]:
        return dict(Counter(m.gateway for m in self.members))

    # measuring

    async def settle(self, accepted: int, settle_s: float) -> bool:
        """Wait until every member has every accepted message, or until deliveries stopped
        arriving for ``settle_s`` s. True when complete."""
        expected = accepted * len(self.members)
        progress, last = time.monotonic(), self.unique()
        while last < expected:
            await asyncio.sleep(0.02)
            if self.unique() != last:
                progress, last = time.monotonic(), self.unique()
            elif time.monotonic() - progress > settle_s:
                return False
        return True

    def report(self, sender: Sender) -> dict[str, Any]:
        ok = [i for i in range(self.messages) if sender.ok[i]]
        started = sender.started
        latencies: list[int] = []
        lost = duplicates = reordered = complete = 0
        last_receive = 0
        for m in self.members:
            got = [m.at[i] - started[i] for i in ok if m.seen[i]]
            latencies += got
            lost += len(ok) - len(got)
            complete += len(got) == len(ok)
            duplicates += m.duplicates
            reordered += m.reordered
            last_receive = max(last_receive, max(m.at, default=0))
        first_post = min((started[i] for i in ok), default=0)
        span = (last_receive - first_post) / 1e9
        return {
            "posts": {"accepted": len(ok), "ratelimited": sender.ratelimited,
                      "failed": sender.failed, "errors": dict(sender.errors.most_common()),
                      "per_s": sender.per_s()},
            "deliveries": {"expected": len(ok) * len(self.members), "received": len(latencies),
                           "per_s": round(len(latencies) / span, 1) if span > 0 else None,
                           "span_s": round(span, 3), "lost": lost, "duplicates": duplicates,
                           "reordered": reordered},
            "latency_ms": latency_stats(latencies),
            "clients": {"connected": len(self.members), "complete": complete,
                        "kicked": sum(m.kicked for m in self.members),
                        "goodbye": sum(m.goodbye for m in self.members)},
        }

    def close(self) -> None:
        for m in self.members:
            m.closing = True
            if m.transport is not None:
                m.transport.send_close()
                m.transport.disconnect()


async def _connect(http: httpx.AsyncClient, api: str, token: str, crowd: Crowd,
                   attempts: int, hello_timeout: float) -> Member:
    """One member, connected and past hello; a failed attempt starts over with a fresh
    rtm.connect (a ticket is good once)."""
    problem = "no attempt"
    for _ in range(attempts):
        try:
            response = await http.post(api + "rtm.connect",
                                       headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 429:
                await asyncio.sleep(retry_after(response))
                continue
            reply = response.json()
            if not reply.get("ok"):
                problem = f"rtm.connect answered {reply.get('error')}"
                continue
            transport, member = await picows.ws_connect(lambda: Member(crowd), reply["url"])
            try:
                await asyncio.wait_for(member.hello, hello_timeout)
            except BaseException:
                member.closing = True
                transport.disconnect()
                raise
            member.gateway = urlsplit(reply["url"]).netloc
            return member
        except (httpx.HTTPError, OSError, picows.WSError, TimeoutError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
    raise ClusterError(f"a member could not connect in {attempts} attempts: {problem}")


def retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


class Member(WSListener):  # type: ignore[misc]
    """One RTM socket: records, per bench message index, the first receive time. The
    frame callback is the client process's hot path: locals and module globals only."""

    def __init__(self, crowd: Crowd) -> None:
        super().__init__()
        self.seen = bytearray(crowd.messages)
        self.at = array("q", bytes(8 * crowd.messages))  # perf_counter_ns, first receipt
        self.unique = 0
        self.last_seq = -1
        self.duplicates = self.reordered = 0
        self.kicked = self.goodbye = self.closing = False
        self.gateway = ""
        self.transport: WSTransport | None = None
        self.partial: list[bytes] = []
        self.hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closing:
            self.kicked = True
        if not self.hello.done():
            self.hello.set_exception(ConnectionError("closed before hello"))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        now = _now()
        if frame.msg_type != TEXT or not frame.fin:
            self.unusual(transport, frame)
            return
        event = _loads(frame.get_payload_as_memoryview())
        text = event.get("text")
        if text is None or text[:PREFIX_LEN] != TEXT_PREFIX:
            self.other(event)
            return
        i = int(text[PREFIX_LEN:INDEX_END])
        seen = self.seen
        if i >= len(seen):
            return
        if seen[i]:
            self.duplicates += 1
            return
        seen[i] = 1
        self.at[i] = now
        self.unique += 1
        # the stream position is the commit order; indices may commit out of order when
        # several posts are in flight, positions may not
        seq = event.get("seq", i)
        if seq < self.last_seq:
            self.reordered += 1
        else:
            self.last_seq = seq

    def unusual(self, transport: WSTransport, frame: WSFrame) -> None:
        """A message in several frames (handled once whole), a close, a ping."""
        kind = frame.msg_type
        if kind == TEXT or kind == CONTINUATION:
            self.partial.append(frame.get_payload_as_bytes())
            if frame.fin:
                whole, self.partial = b"".join(self.partial), []
                self.on_ws_frame(transport, _Whole(whole))  # type: ignore[arg-type]
        elif kind == CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def other(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "hello" and not self.hello.done():
            self.hello.set_result(None)
        elif kind == "goodbye":
            self.goodbye = True


class _Whole:
    """A reassembled message, shaped like the single frame the hot path reads."""

    msg_type = TEXT
    fin = True

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def get_payload_as_memoryview(self) -> memoryview:
        return memoryview(self.payload)


class Sender:
    """Posts ``messages`` bench texts to one channel: paced, or a few in flight at once."""

    def __init__(self, api: str, token: str, channel: str, messages: int,
                 text_bytes: int) -> None:
        self.url = api + "chat.postMessage"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.channel, self.text_bytes = channel, text_bytes
        self.messages = messages
        self.started = [0] * messages  # perf_counter_ns at the start of the accepted post
        self.ok = bytearray(messages)
        self.ratelimited = self.failed = 0
        self.errors: Counter[str] = Counter()
        self.first = self.last = 0

    def accepted(self) -> int:
        return sum(self.ok)

    def per_s(self) -> float | None:
        span = (self.last - self.first) / 1e9
        return round(self.accepted() / span, 1) if span > 0 else None

    async def run(self, rate: float) -> None:
        in_flight = PACED_MAX_IN_FLIGHT if rate else UNPACED_IN_FLIGHT
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            self.first = time.perf_counter_ns()
            if rate:
                await self._paced(http, rate, in_flight)
            else:
                await self._unpaced(http, in_flight)
            self.last = time.perf_counter_ns()

    async def _paced(self, http: httpx.AsyncClient, rate: float, in_flight: int) -> None:
        gate = asyncio.Semaphore(in_flight)
        start = time.perf_counter()
        tasks = []

        async def post(i: int) -> None:
            try:
                await self.post(http, i)
            finally:
                gate.release()

        for i in range(self.messages):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            tasks.append(asyncio.create_task(post(i)))
        await asyncio.gather(*tasks)

    async def _unpaced(self, http: httpx.AsyncClient, in_flight: int) -> None:
        todo = iter(range(self.messages))

        async def worker() -> None:
            for i in todo:
                await self.post(http, i)

        await asyncio.gather(*(worker() for _ in range(in_flight)))

    async def post(self, http: httpx.AsyncClient, i: int) -> None:
        """One message; a 429 (or ``ratelimited``) is obeyed (Retry-After) and retried."""
        body = orjson.dumps({"channel": self.channel, "text": bench_text(i, self.text_bytes)})
        headers = {**self.headers, "Content-Type": "application/json"}
        while True:
            started = time.perf_counter_ns()
            try:
                response = await http.post(self.url, content=body, headers=headers)
                reply = orjson.loads(response.content) if response.status_code != 429 else {}
            except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
                self._fail(type(exc).__name__)
                return
            if response.status_code == 429 or reply.get("error") == "ratelimited":
                self.ratelimited += 1
                await asyncio.sleep(retry_after(response))
                continue
            if not reply.get("ok"):
                self._fail(str(reply.get("error")))
                return
            self.started[i], self.ok[i] = started, 1
            return

    def _fail(self, why: str) -> None:
        self.failed += 1
        self.errors[why] += 1
