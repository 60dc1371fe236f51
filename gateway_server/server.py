"""The gateway process: client sockets in, one upstream link per channel server out."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterable
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import trio
from prometheus_client import Counter, Gauge

from cluster import service, wire
from cluster.batching import BatchFailed, Coalescer
from cluster.ring import Ring
from cluster.settings import Settings
from gateway_server import sockets
from gateway_server.client import (
    Backlog,
    Client,
    Limits,
    Send,
    handle_frame,
    rtm_error,
    rtm_ok,
    text_frame,
)
from gateway_server.drain import REFUSED, Drain
from gateway_server.positions import Positions
from gateway_server.resume import Cursor, Overflow
from gateway_server.upstream import Upstream

log = logging.getLogger(__name__)


class RedeemUnavailable(Exception):
    """No webapp could be asked about a ticket."""


class ReplayFailed(Exception):
    """Neither a channel server nor the event log could supply a resuming client's events."""


CLIENTS = Gauge("backchannel_gateway_server_clients", "Connected RTM clients")
DELIVERED = Counter("backchannel_gateway_server_deliveries_total", "Payloads queued to sockets")
KICKED = Counter("backchannel_gateway_server_kicked_total", "Clients closed", ["reason"])
POSITIONS = Counter("backchannel_gateway_server_position_total",
                    "Stream items judged by position", ["outcome"])
MAX_CLIENT_FRAME = 16 * 1024
JOIN_KINDS = {"channel_joined", "group_joined", "im_created", "mpim_joined"}
LEAVE_KINDS = {"channel_left", "group_left"}
RESUMES = Counter("backchannel_gateway_server_resumes_total", "Streams resumed by clients")
RESUME_FAILED = Counter("backchannel_gateway_server_resume_failed_total",
                        "resume_failed events sent", ["reason"])
REPLAYED = Counter("backchannel_gateway_server_replayed_total",
                   "Events replayed to resuming clients")
REDEEM_BATCHES = Counter("backchannel_gateway_server_redeem_batches_total",
                         "Ticket redeem requests (each for one or more tickets)")
TYPING_DROPPED = Counter("backchannel_gateway_server_typing_dropped_total",
                         "Typing frames over the per-connection limit")
REPLAY_DEADLINE_S = 15.0
GATHER_PASSES = 2  # scheduler passes with nothing new before a batch goes out
REDEEM_ATTEMPTS = 2
MAX_REDEEM_BATCH = 200
HTTP_POOL = 16
REDEEM_POOL_WAIT_S = 30.0
SUBSCRIBE_DEADLINE_S = 10.0
SUBSCRIBE_ATTEMPT_S = 2.0
SUBSCRIBE_RETRY_S = 0.1
# an RTM message's post: a webapp that does not answer in time is given up on (the
# client's next message is not held up for longer), and a pooled connection the webapp
# closed gets one more try, safely: every post carries a client_msg_id
POST_TIMEOUT_S = 15.0
POST_ATTEMPTS = 2
RTM_SENDS = Counter("backchannel_gateway_server_rtm_sends_total",
                    "Messages clients sent over their sockets", ["outcome"])


class Gateway:
    def __init__(self, settings: Settings, name: str, watcher: service.RingWatcher,
                 http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.name = name
        self.watcher = watcher
        self.http = http
        self.local: dict[str, set[Client]] = {}
        self.clients: set[Client] = set()
        self.upstreams: dict[str, Upstream] = {}
        self.positions = Positions()
        self.resuming: dict[str, set[Client]] = {}  # stream -> clients with a cursor on it
        self.discovery = service.Discovery(settings)
        self.presence_dirty = trio.Event()
        self.nursery: trio.Nursery | None = None
        self.redeemer = Coalescer(self._redeem_batch, MAX_REDEEM_BATCH)
        self.drain: Drain | None = None  # refuses new clients once draining
        self.backlog = Backlog(settings.gateway_backlog_bytes)
        self._inbox: list[Any] = []  # event items received, not delivered yet
        self._inbox_ready = trio.Event()
        self.limits = Limits(settings.client_slow_bytes, settings.client_slow_after_s,
                             settings.client_max_bytes)
        watcher.listen(self._on_ring_change)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "epoch": self.watcher.ring.epoch, "clients": len(self.clients),
                "streams": len(self.local), "unsent_bytes": self.backlog.bytes,
                "upstreams": {m: u._ws is not None for m, u in self.upstreams.items()}}

    # --- subscriptions -------------------------------------------------------------------

    def _wanted(self, member: str) -> set[str]:
        ring = self.watcher.ring
        try:
            return {s for s in self.local if ring.owner(s) == member}
        except LookupError:
            return set()

    def _positions(self, streams: Iterable[str]) -> dict[str, int]:
        return self.positions.of(streams)

    def _on_subscribed(self, up: Upstream, frame: dict[str, Any], caught_up: set[str]) -> None:
        """The channel server's answer follows any catch-up it sent: for a stream we sent a
        position for, its position is where we stand now (see Positions.answered)."""
        positions = frame.get("positions") or {}
        if not isinstance(positions, dict):
            raise wire.BadFrame("positions")
        for stream, seq in positions.items():
            if stream not in self.local or type(seq) is not int:
                continue
            skipped = self.positions.answered(stream, seq, stream in caught_up)
            if skipped:
                POSITIONS.labels("skipped").inc(skipped)
                log.error("stream position jumped after catch-up: missing=%d", skipped)

    async def _on_ring_change(self, before: Ring, after: Ring) -> None:
        members = after.config.urls()
        for member in list(self.upstreams):
            if member not in members or self.upstreams[member].url != members[member]:
                self.upstreams.pop(member).cancel.cancel()
        for member, url in members.items():
            if member not in self.upstreams and self.nursery is not None:
                up = self.upstreams[member] = Upstream(
                    member, url, self.name, self.settings.internal_secret,
                    lambda m=member: self._wanted(m), self._on_frame, self._positions,
                    self._on_subscribed, self.backlog.wait_below, self.flush_inbox)
                self.nursery.start_soon(up.run, lambda: self.watcher.ring.epoch)
        if self.nursery is not None:
            self.nursery.start_soon(self._rebalance)

    async def _rebalance(self) -> None:
        epoch = self.watcher.ring.epoch
        for member, up in list(self.upstreams.items()):
            await up.unsubscribe(up.held() - self._wanted(member), epoch)
        await self.ensure_subscribed(set(self.local))

    async def ensure_subscribed(self, streams: set[str]) -> bool:
        """Subscribe every stream at its owner, all owners at once; True once all have
        confirmed. A stream whose owner is down or moved is retried under the newest ring
        until SUBSCRIBE_DEADLINE_S: a dead member is healed out of the ring within seconds,
        and a client whose streams it held should get ``hello`` then, not a refusal."""
        with trio.move_on_after(SUBSCRIBE_DEADLINE_S):
            while streams:
                streams = {s for s in streams if s in self.local}
                streams = await self._subscribe_round(streams)
                if streams:
                    await trio.sleep(SUBSCRIBE_RETRY_S)
                    await self.watcher.refresh()
            return True
        return False

    async def _subscribe_round(self, streams: set[str]) -> set[str]:
        """One attempt under the current ring; returns the streams still not subscribed."""
        ring = self.watcher.ring
        try:
            owners = ring.owners(streams)
        except LookupError:
            return streams
        left: set[str] = set()

        async def at(member: str, group: list[str]) -> None:
            up = self.upstreams.get(member)
            need = [s for s in group if up is None or s not in up.subscribed]
            if up is None:
                left.update(need)
                return
            if not need:
                return
            try:
                with trio.fail_after(SUBSCRIBE_ATTEMPT_S):
                    left.update(await up.subscribe(need, ring.epoch))
            except trio.TooSlowError:
                left.update(s for s in need if s not in up.subscribed)

        async with trio.open_nursery() as nursery:
            for member, group in owners.items():
                nursery.start_soon(at, member, group)
        return left

    def _attach(self, client: Client, streams: set[str]) -> None:
        for stream in streams:
            self.local.setdefault(stream, set()).add(client)
        client.streams |= streams

    def _detach(self, client: Client, streams: set[str]) -> None:
        self._end_resume(client, streams & set(client.cursors))
        idle = []
        for stream in streams:
            holders = self.local.get(stream)
            if holders is not None:
                holders.discard(client)
                if not holders:
                    del self.local[stream]
                    self.positions.forget(stream)
                    idle.append(stream)
        client.streams -= streams
        if idle and self.nursery is not None:
            self.nursery.start_soon(self._unsubscribe_idle, idle)

    async def _unsubscribe_idle(self, streams: list[str]) -> None:
        ring = self.watcher.ring
        try:
            owners = ring.owners(streams)
        except LookupError:
            return
        for member, group in owners.items():
            up = self.upstreams.get(member)
            if up is not None:
                await up.unsubscribe([s for s in group if s not in self.local], ring.epoch)

    # --- delivery ------------------------------------------------------------------------

    async def _on_frame(self, up: Upstream, frame: dict[str, Any]) -> None:
        if frame["type"] == "events":
            self._inbox.extend(wire.field(frame, "items", list))
            self._inbox_ready.set()
        elif frame["type"] == "moved":
            self.flush_inbox()
            streams = [s for s in wire.str_list(frame, "streams") if s in self.local]
            up.forget(streams)
            await self.watcher.refresh()
            if streams and self.nursery is not None:
                self.nursery.start_soon(self.ensure_subscribed, set(streams))

    async def fanout(self) -> None:
        """Deliver what the links received, in batches. Before each batch every link gets
        to hand over what it has already read (a few scheduler passes, no waiting for the
        network): when the gateway is behind, the events that piled up during the last
        batch go out together, one write per client, which is what makes the cost per
        delivery fall as load rises (docs/performance.md, "Coalescing under load")."""
        while True:
            await self._inbox_ready.wait()
            quiet = 0
            while quiet < GATHER_PASSES:
                before = len(self._inbox)
                await trio.sleep(0)
                quiet = quiet + 1 if len(self._inbox) == before else 0
            # only this task replaces the event (a waiter keeps the object it waits on),
            # in the same step as it takes the inbox: an item added later sets the new one
            self._inbox_ready = trio.Event()
            self.flush_inbox()

    def flush_inbox(self) -> None:
        """Deliver everything received so far, now: before a link's other frames (a
        subscribe answer, a replay page, moved), so that frames take effect in the order
        they arrived."""
        items, self._inbox = self._inbox, []
        if items:
            self._deliver(items)

    def _in_order(self, stream: str, seq: Any) -> bool:
        """Exactly once, in seq order, whichever channel server an item came from."""
        verdict = self.positions.judge(stream, seq)
        if verdict == "deliver":
            return True
        POSITIONS.labels(verdict).inc()
        if verdict == "resync" and self.nursery is not None:
            self.nursery.start_soon(self._resync, stream)
        return False

    async def _resync(self, stream: str) -> None:
        try:
            ring = self.watcher.ring
            up = self.upstreams.get(ring.owner(stream))
            if up is not None:
                moved = await up.subscribe([stream], ring.epoch)
                if moved:
                    await self.ensure_subscribed({stream})
        except (LookupError, trio.TooSlowError):
            log.warning("resync failed; the next item retries it")
        finally:
            self.positions.resync_failed(stream)

    def _deliver(self, items: list[Any]) -> None:
        """Fan a batch out: each event's frame is built once, and each client gets all of
        its frames from the batch in one write (docs/performance.md)."""
        # a client's first frame is stored bare: a list per client per batch is a GC-tracked
        # object that outlives young collections during a big fanout and drives gen2 passes
        out: dict[Client, bytes | list[bytes]] = {}
        joined: set[str] = set()
        for item in items:
            if not isinstance(item, dict):
                continue
            stream, payload = item.get("stream"), item.get("payload")
            holders = self.local.get(stream) if isinstance(stream, str) else None
            if not holders or not isinstance(payload, str):
                continue
            seq = item.get("seq")
            if not self._in_order(stream, seq):
                continue
            kind, ref = item.get("kind"), item.get("ref") or ""
            resuming = self.resuming.get(stream) if seq else None
            frame = text_frame(payload)
            for client in holders:
                if kind == "user_typing" and client.user == ref:
                    continue
                if resuming is not None and client in resuming:
                    self._flush_batch(client, out)  # its earlier frames before the cursor's
                    self._resume_live(client, stream, seq, payload)  # type: ignore[arg-type]
                    continue
                frames = out.get(client)
                if frames is None:
                    out[client] = frame
                elif type(frames) is bytes:
                    out[client] = [frames, frame]
                else:
                    frames.append(frame)
            DELIVERED.inc(len(holders))
            if kind in JOIN_KINDS and ref:
                at = item.get("at")
                if type(at) is int and ref not in self.local and at >= 0:
                    self.positions.pos[ref] = at  # subscribe from the join, not from now
                for client in list(holders):
                    self._attach(client, {ref})
                joined.add(ref)
            elif kind in LEAVE_KINDS and ref:
                for client in list(holders):
                    self._detach(client, {ref})
        for client, frames in out.items():
            client.push_frame(frames if type(frames) is bytes else b"".join(frames))
        if joined and self.nursery is not None:
            self.nursery.start_soon(self.ensure_subscribed, joined)

    @staticmethod
    def _flush_batch(client: Client, out: dict[Client, bytes | list[bytes]]) -> None:
        frames = out.pop(client, None)
        if frames:
            client.push_frame(frames if type(frames) is bytes else b"".join(frames))

    async def _typing(self, client: Client, channel: str) -> None:
        try:
            up = self.upstreams.get(self.watcher.ring.owner(channel))
        except LookupError:
            return
        if up is not None:
            await up.send({"type": "ephemeral", "stream": channel, "event": {
                "type": "user_typing", "channel": channel, "user": client.user}})

    # --- clients -------------------------------------------------------------------------

    async def _redeem(self, ticket: str) -> dict[str, Any] | None:
        """The ticket's grant, or None if the webapp refused it; raises RedeemUnavailable
        when no webapp answered, which the client must not mistake for bad credentials.
        Concurrent redeems go out together (see cluster/batching.py)."""
        try:
            return (await self.redeemer.get([ticket])).get(ticket)
        except BatchFailed as exc:
            raise RedeemUnavailable from exc

    async def _redeem_batch(self, tickets: list[str]) -> dict[str, dict[str, Any]]:
        """One request for many tickets. A pooled connection the webapp closed as we sent
        gets one more try."""
        # the attempt id makes a retry safe: tickets are single use, and an answer lost on a
        # pooled connection the webapp closed must not turn valid tickets into a 401
        body = await self._ask_webapp("/internal/rtm.redeem",
                                      {"tickets": tickets, "attempt": uuid.uuid4().hex},
                                      REDEEM_ATTEMPTS)
        if body is not None:
            grants = body.get("grants") if body.get("ok") else None
            REDEEM_BATCHES.inc()
            return {t: g for t, g in (grants or {}).items() if isinstance(g, dict)}
        raise RedeemUnavailable

    async def _ask_webapp(self, path: str, body: dict[str, Any], attempts: int,
                          timeout: float | None = None) -> dict[str, Any] | None:
        """POST to a webapp's internal endpoint, trying each known webapp ``attempts``
        times over (a pooled connection the webapp closed as we sent gets another try):
        its JSON object ({} for a refusal that is not one), or None when none answered."""
        extra = {} if timeout is None else {"timeout": timeout}
        for _ in range(attempts):
            for url in (await self.discovery.lookup("webapp")).values():
                try:
                    resp = await self.http.post(
                        url + path, json=body, **extra,
                        headers={"x-backchannel-internal": self.settings.internal_secret})
                except httpx.HTTPError as exc:
                    log.warning("webapp %s failed: %s", path, type(exc).__name__)
                    self.discovery.forget("webapp")
                    continue
                if resp.status_code >= 500 or resp.status_code in (408, 429):
                    continue  # not an answer about the request: ask again
                try:
                    answer = resp.json() if resp.status_code == 200 else {}
                except ValueError:
                    answer = {}
                return answer if isinstance(answer, dict) else {}
        return None

    async def handle(self, stream: trio.SocketStream) -> None:
        """Per-connection handler (docs/performance.md, "Client sockets"): the upgrade
        request, then the client. Every failure is contained to this one client. Flat on
        purpose: each coroutine frame here lives as long as the socket."""
        drain = self.drain
        counted = False
        try:
            pending = await sockets.handshake(stream)
            if pending is None:
                return
            if drain is not None:
                if drain.draining:  # a stale rtm.connect answer: fetch a fresh URL
                    await pending.reject(503, body=REFUSED)
                    return
                drain.handlers += 1
                counted = True
            await self.serve(pending)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("client handler failed")
        finally:
            if counted:
                drain.handlers -= 1  # type: ignore[union-attr]
            await trio.aclose_forcefully(stream)

    async def serve(self, request: sockets.Pending) -> None:
        """A client past its upgrade request: redeem its ticket, accept, serve."""
        ticket = parse_qs(urlsplit(request.path).query).get("ticket", [""])[0]
        try:
            who = await self._redeem(ticket) if 0 < len(ticket) <= 128 else None
        except RedeemUnavailable:
            await request.reject(503, body=b'{"ok":false,"error":"internal_error"}')
            return
        if who is None:
            await request.reject(401, body=b'{"ok":false,"error":"invalid_auth"}')
            return
        proto = await request.accept()
        client = Client(request.stream, proto, who["user"], who["team"], self.limits,
                        self._spawn, self.backlog)
        self.clients.add(client)
        self._attach(client, {who["user"], *who["channels"]})
        CLIENTS.set(len(self.clients))
        self.presence_dirty.set()
        try:
            with client.scope:
                await self._start(client, who)
                del who  # the grant is not kept for the socket's life
                await self._reader(client)
        finally:
            self.clients.discard(client)
            self._end_resume(client, set(client.cursors))
            self._detach(client, set(client.streams))
            CLIENTS.set(len(self.clients))
            self.presence_dirty.set()
            KICKED.labels(client.kick_reason or "shutdown").inc()
            client.kick(client.kick_reason or "shutdown")
            with trio.move_on_after(1, shield=True):
                await client.say_goodbye()

    async def _start(self, client: Client, who: dict[str, Any]) -> None:
        if not await self.ensure_subscribed(set(client.streams)):
            client.kick("subscribe failed")
        self._greet(client, who)

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self.nursery is not None:
            self.nursery.start_soon(fn, *args)

    async def _for_client(self, client: Client, fn: Any, *args: Any) -> None:
        """Run a task on a client's behalf; the client's kick cancels it."""
        with trio.CancelScope() as scope:
            client.link(scope)
            try:
                await fn(client, *args)
            finally:
                client.unlink(scope)

    # --- resume (docs/rtm.md) ------------------------------------------------------------

    def _greet(self, client: Client, who: dict[str, Any]) -> None:
        """``hello`` with each stream's starting position, then ``resume_failed``s, and
        the replay started: in one synchronous step, so the boundary between what the
        gateway delivered before and what this client gets is exact."""
        resume = who.get("resume")
        positions: dict[str, int] = {}
        for stream in client.streams:
            live = self.positions.pos.get(stream)
            start = resume.get(stream) if isinstance(resume, dict) else None
            if type(start) is int and start >= 0:
                positions[stream] = start
                if live != start:
                    self._begin_resume(client, stream, start, live)
            elif live is not None:
                positions[stream] = live
        client.ready = True
        client.push(wire.dumps({"type": "hello", "positions": positions}))
        for failure in who.get("resume_failed") or ():
            self._resume_failed(client, failure.get("stream"), failure.get("reason"),
                                positions.get(failure.get("stream")))
        if any(c.fetching for c in client.cursors.values()):
            self._start_replay(client)

    def _begin_resume(self, client: Client, stream: str, start: int, live: int | None) -> None:
        client.cursors[stream] = Cursor(start, live or 0, self.settings.resume_max_held)
        self.resuming.setdefault(stream, set()).add(client)
        RESUMES.inc()

    def _end_resume(self, client: Client, streams: Iterable[str]) -> None:
        for stream in streams:
            client.cursors.pop(stream, None)
            resuming = self.resuming.get(stream)
            if resuming is not None:
                resuming.discard(client)
                if not resuming:
                    del self.resuming[stream]

    def _resume_failed(self, client: Client, stream: Any, reason: Any, seq: int | None) -> None:
        event: dict[str, Any] = {"type": "resume_failed", "stream": stream, "reason": reason}
        if seq is not None:
            event["seq"] = seq
        RESUME_FAILED.labels(str(reason)).inc()
        client.push(wire.dumps(event))

    def _resume_live(self, client: Client, stream: str, seq: int, payload: str) -> None:
        cursor = client.cursors[stream]
        try:
            now, fetch = cursor.live(seq, payload)
        except Overflow:
            client.kick("too slow")
            return
        if now is not None:
            client.push(now)
            if not cursor.fetching:
                self._end_resume(client, [stream])  # in step with the gateway from here
        if fetch:
            self._start_replay(client)

    def _start_replay(self, client: Client) -> None:
        if not client.replaying and not client.kicked:
            client.replaying = True
            self._spawn(self._for_client, client, self._replay)

    async def _replay(self, client: Client) -> None:
        """Fill every cursor of this client that is missing events, one stream at a time,
        until none is; a replay that cannot get its events closes the client, which then
        resumes again, rather than skip anything."""
        try:
            while busy := [(s, c) for s, c in client.cursors.items() if c.fetching]:
                for stream, cursor in busy:
                    await self._replay_stream(client, stream, cursor)
        except ReplayFailed:
            client.kick("replay failed")
        finally:
            client.replaying = False

    async def _replay_stream(self, client: Client, stream: str, cursor: Cursor) -> None:
        while client.cursors.get(stream) is cursor:
            wanted = cursor.next_fetch()
            if wanted is None:
                out, skipped = cursor.drain(), 0
                # no await between an empty drain and settle: a live event arriving while
                # the replay was still queueing is held, and delivered by this loop
                if not out and cursor.settle():
                    break
            else:
                out, skipped = cursor.apply(await self._fetch(stream, *wanted))
            if skipped:
                self._resume_failed(client, stream, "too_old", cursor.last)
            REPLAYED.inc(len(out))
            for payload in out:
                await client.push_paced(payload)
        if (client.cursors.get(stream) is cursor and not cursor.fetching
                and cursor.last >= self.positions.pos.get(stream, 0)):
            self._end_resume(client, [stream])

    async def _fetch(self, stream: str, after: int, upto: int) -> list[tuple[int, str]]:
        """A page of (after, upto] from the stream's owner, following the ring through
        moves and failovers for up to REPLAY_DEADLINE_S."""
        with trio.move_on_after(REPLAY_DEADLINE_S):
            while True:
                try:
                    up = self.upstreams.get(self.watcher.ring.owner(stream))
                    page = await up.replay(stream, after, upto) if up is not None else None
                    if page is not None:
                        return page
                except (LookupError, trio.TooSlowError):
                    pass
                await trio.sleep(SUBSCRIBE_RETRY_S)
                await self.watcher.refresh()
        raise ReplayFailed(stream)

    async def _reader(self, client: Client) -> None:
        interval = self.settings.typing_interval_s
        assert client.stream is not None and client.proto is not None
        frames = sockets.messages(client.stream, client.proto, MAX_CLIENT_FRAME, client.write)
        try:
            async with contextlib.aclosing(frames):
                async for raw in frames:
                    reply, action = handle_frame(client, raw)
                    if reply is not None:
                        client.push(reply)
                    if isinstance(action, Send):
                        if not client.queue_send(action):
                            RTM_SENDS.labels("refused").inc()
                            client.push(rtm_error(action.reply_to, "ratelimited"))
                        elif not client.posting:
                            client.posting = True
                            self._spawn(self._for_client, client, self._poster)
                        continue
                    typing = action
                    if typing is not None:
                        if client.may_type(typing, trio.current_time(), interval):
                            await self._typing(client, typing)
                        else:
                            TYPING_DROPPED.inc()
        except sockets.Gone:
            client.kick("closed")

    # --- RTM sends -----------------------------------------------------------------------

    async def _poster(self, client: Client) -> None:
        """Post a client's RTM messages one at a time, in the order sent, each answered on
        its socket; its own task (started by the first message, ending with the last), so
        neither the reader nor other clients wait on it."""
        try:
            while (send := client.next_send()) is not None:
                try:
                    reply = await self._post(client, send)
                except Exception:  # one message's failure must not close the socket
                    log.exception("rtm post failed")
                    reply = rtm_error(send.reply_to, "internal_error")
                client.push(reply)
        finally:
            client.posting = False

    async def _post(self, client: Client, send: Send) -> str:
        """One message through a webapp (``/internal/rtm.post``, which checks it as
        chat.postMessage does); the RTM reply to it."""
        body = {"user": client.user, "channel": send.channel, "text": send.text,
                "thread_ts": send.thread_ts,
                "client_msg_id": send.client_msg_id or str(uuid.uuid4())}
        answer = await self._ask_webapp("/internal/rtm.post", body, POST_ATTEMPTS,
                                        POST_TIMEOUT_S)
        if answer is not None:
            if answer.get("ok"):
                RTM_SENDS.labels("posted").inc()
                return rtm_ok(send.reply_to, answer["ts"], answer["text"])
            RTM_SENDS.labels("refused").inc()
            return rtm_error(send.reply_to, str(answer.get("error") or "internal_error"))
        RTM_SENDS.labels("failed").inc()
        return rtm_error(send.reply_to, "internal_error")

    # --- presence ------------------------------------------------------------------------

    async def report_presence(self) -> None:
        """Send the presence server this gateway's full user set: on change (debounced) and
        periodically, so a crashed gateway's users expire there on their own."""
        while True:
            with trio.move_on_after(self.settings.presence_report_interval_s):
                await self.presence_dirty.wait()
            await trio.sleep(0.05)
            self.presence_dirty = trio.Event()
            users: dict[str, int] = {}
            for client in self.clients:
                users[client.user] = users.get(client.user, 0) + 1
            for url in (await self.discovery.lookup("presence_server")).values():
                try:
                    await self.http.post(url + "/sync", json={"gateway": self.name,
                                                              "users": users},
                                         headers={"x-backchannel-internal":
                                                  self.settings.internal_secret})
                except httpx.HTTPError as exc:
                    log.warning("presence report failed: %s", type(exc).__name__)
                    self.discovery.forget("presence_server")


async def main(settings: Settings, name: str, port: int, http_port: int,
               addr_file: Any = None, *,
               task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled, or return once a drain (POST /drain) has finished."""
    watcher = service.RingWatcher(settings)
    # a small pool: in a reconnect storm hundreds of ticket redeems are in flight at once,
    # and httpcore's pool bookkeeping costs per request grow with its connection count;
    # queued requests wait for a connection (pool timeout) rather than open more
    limits = httpx.Limits(max_connections=HTTP_POOL, max_keepalive_connections=HTTP_POOL)
    timeout = httpx.Timeout(5.0, pool=REDEEM_POOL_WAIT_S)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http, \
            trio.open_nursery() as nursery:
        gateway = Gateway(settings, name, watcher, http)
        gateway.nursery = nursery
        drain = Drain(settings, gateway)
        await nursery.start(watcher.run)
        nursery.start_soon(gateway.report_presence)
        nursery.start_soon(gateway.redeemer.run)
        nursery.start_soon(gateway.fanout)
        nursery.start_soon(drain.run, nursery.cancel_scope)
        gateway.drain = drain
        ws_server = await nursery.start(drain.listen, partial(
            sockets.serve, gateway.handle, settings.bind_host, port, handler_nursery=nursery))
        url = f"ws://{settings.bind_host}:{ws_server.port}"
        app = service.http_app("gateway_server", lambda: {**gateway.status(), **drain.status()},
                               drain.routes())
        http_url = await nursery.start(service.serve_http, app, settings.bind_host, http_port)
        with drain.lease:
            await service.announce(settings, "gateway_server", name, url, http_url, addr_file,
                                   task_status)
        drain.lease_released.set()
