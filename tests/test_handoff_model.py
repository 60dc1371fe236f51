"""The handoff protocol as a model, checked by hypothesis over random ring changes and events.

The pure parts are the real ones: ``StreamState`` (a channel server's per-stream ordering and
catch-up), ``Positions`` (the gateway's exactly-once judge) and ``Ring``/``RingConfig``
(ownership). The glue around them is mirrored, function by function, by a small deterministic
model of ``channel_server/server.py``, ``gateway_server/server.py`` + ``upstream.py`` and the
admin server's forwarding:

* a socket is a pair of FIFO queues (``Link``); a frame is a small dataclass;
* every ``await`` after which the world may have moved on (an event log read, a gateway
  waiting for an answer, a task started with ``nursery.start_soon``) is a ``yield`` in a
  generator, and hypothesis picks which process takes the next step;
* the event log, the ring in Redis and the webapp's notifications are plain data: a commit
  appends a seq and queues a notification, which the admin may deliver late, out of order, to
  an owner by a stale ring, or never (a webapp crash between commit and notify).

Safety (after every step): each stream's delivered seqs at the gateway are 1, 2, 3, ... with
no duplicate, reorder or gap, and the gateway never had to jump its position.
Liveness (after quiescing: every process learns the ring, every notification still held is
delivered, head checks and repairs run, every queue drains): the gateway, subscribed to every
stream before the first commit, has delivered every committed seq; and what it believes it is
subscribed to at each slot is what that slot's server has it subscribed to, and is exactly what
the slot owns (a wrong belief loses the stream the next time the ring brings it back there).

The fixed scenarios at the end are the violations this machine found, shrunk by hand.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Callable, Generator, Iterable
from functools import partial
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from channel_server.streams import StreamState
from cluster.ring import Member, Ring, RingConfig
from gateway_server.positions import Positions

STREAMS = ("C1", "C2", "U1")
PROCESSES = ("p1", "p2", "p3", "p4", "p5", "p6")  # channel server processes, in a ring or not
SLOTS = ("s1", "s2", "s3", "s4")
BUFFER_SIZE = 3  # small, so that catch-up also takes the event log path
REPAIR_ROUNDS = 3  # _repair: a hole the log fails to fill this many times is skipped
ENSURE_ROUNDS = 3  # ensure_subscribed: retries this many times after "moved"
SETTLE_STEPS = 10_000
# the order in which whatever can happen next happens: each number picks one possible step
SCHEDULES = st.lists(st.integers(0, 63), max_size=40)


def payload(stream: str, seq: int) -> str:
    return f"{stream}#{seq}"


def url(process: str) -> str:
    return f"ws://{process}"


_RINGS: dict[str, Ring] = {}


def ring_of(config: RingConfig) -> Ring:
    """A Ring per config, cached: building one hashes 150 vnodes per member."""
    key = config.to_json()
    if key not in _RINGS:
        _RINGS[key] = Ring(config)
    return _RINGS[key]


# --- frames ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Item:
    """One event of the stream, server -> gateway (an item of an "events" frame)."""

    stream: str
    seq: int


@dataclasses.dataclass(frozen=True)
class Subscribed:
    """The answer to a subscribe: queued after the catch-up, on the same queue as events."""

    id: int
    moved: tuple[str, ...]
    positions: dict[str, int]


@dataclasses.dataclass(frozen=True)
class Moved:
    """Control: these streams' subscriptions here are gone (the ring moved them away)."""

    streams: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Subscribe:
    id: int
    epoch: int
    streams: tuple[str, ...]
    after: dict[str, int]


@dataclasses.dataclass(frozen=True)
class Unsubscribe:
    epoch: int
    streams: tuple[str, ...]


class TooSlow(Exception):
    """trio.TooSlowError: the link went down while a request waited for its answer."""


# --- the shared world ------------------------------------------------------------------------


class EventLog:
    """The source of truth: every stream's committed seqs are 1..head."""

    def __init__(self) -> None:
        self.heads = dict.fromkeys(STREAMS, 0)

    def commit(self, stream: str) -> int:
        self.heads[stream] += 1
        return self.heads[stream]

    def head(self, stream: str) -> int:
        return self.heads[stream]

    def fetch(self, stream: str, after: int, upto: int) -> list[int]:
        """EventLog.fetch: the seqs with after < seq <= upto."""
        return list(range(after + 1, min(upto, self.heads[stream]) + 1))


class RingStore:
    """The ring document in Redis; every process reads it (``RingWatcher.refresh``)."""

    def __init__(self, config: RingConfig) -> None:
        self.config = config

    def current(self) -> Ring:
        return ring_of(self.config)


class Link:
    """One gateway <-> channel server socket, and the server's side of it (``GatewayLink``)."""

    def __init__(self, link_id: int, process: str) -> None:
        self.id = link_id
        self.process = process
        self.up: deque[Subscribe | Unsubscribe] = deque()  # gateway -> server
        self.down: deque[Item | Subscribed | Moved] = deque()  # server -> gateway
        self.streams: set[str] = set()
        self.holding: dict[str, list[Item]] = {}  # streams being caught up from the log
        self.closed = False
        # the frame the server is handling: it reads the next one from this link only after
        self.task: Generator[None, None, None] | None = None

    def __repr__(self) -> str:
        return f"Link({self.id}->{self.process})"


def by_id(link: Link) -> int:
    return link.id


# --- channel server --------------------------------------------------------------------------


class ChannelServer:
    """channel_server/server.py's ChannelServer, on queues. A generator method is an async one:
    each ``yield`` is an await after which anything else may happen first."""

    def __init__(self, name: str, store: RingStore, log: EventLog) -> None:
        self.name = name
        self.store = store
        self.log = log
        self.ring = store.current()  # its own view, which may lag until it refreshes
        self.links: list[Link] = []
        self.subs: dict[str, set[Link]] = {}
        self.streams: dict[str, StreamState] = {}
        self.to_load: set[str] = set()
        self.loader: Generator[None, None, None] | None = None

    def refresh(self) -> None:
        """RingWatcher.refresh: read the current ring; listeners run if it is newer."""
        ring = self.store.current()
        if ring.epoch > self.ring.epoch:
            before, self.ring = self.ring, ring
            self._on_ring_change(before, ring)

    def owns(self, stream: str, ring: Ring | None = None) -> bool:
        ring = ring or self.ring
        slot = ring.config.slot_of(self.name)
        try:
            return slot is not None and ring.owner(stream) == slot
        except LookupError:
            return False

    # the admin link (_admin_loop), one event frame
    def on_event(self, epoch: int, stream: str, seq: int) -> bool:
        """True for "ack", False for "moved"."""
        if epoch > self.ring.epoch:
            self.refresh()
        if not self.owns(stream):
            return False
        self.accept(stream, seq)
        return True

    def accept(self, stream: str, seq: int) -> None:
        state = self._state(stream)
        self._fanout(stream, state.offer(seq, payload(stream, seq)))
        if not state.loaded:
            self.to_load.add(stream)  # the loader task loads it
        # _watch_gap: a repair may run from now on (the "repair" rule)

    def _state(self, stream: str) -> StreamState:
        state = self.streams.get(stream)
        if state is None:
            state = self.streams[stream] = StreamState(BUFFER_SIZE)
        return state

    def _fanout(self, stream: str, ready: Iterable[tuple[int, str]]) -> None:
        for seq, item in ready:
            assert item == payload(stream, seq)
            for link in sorted(self.subs.get(stream, ()), key=by_id):
                held = link.holding.get(stream)
                if held is None:
                    self._queue(link, Item(stream, seq))
                else:
                    held.append(Item(stream, seq))

    def _queue(self, link: Link, frame: Item | Subscribed | Moved) -> None:
        if not link.closed:
            link.down.append(frame)

    # the gateway links (_gateway_loop): one frame at a time per link
    def runnable(self) -> list[str]:
        keys = [f"link{link.id}" for link in self.links if link.task is not None or link.up]
        if self.loader is not None or self.to_load:
            keys.append("loader")
        return keys

    def step(self, key: str) -> None:
        """Run one task of this server up to its next await."""
        if key == "loader":
            if self.loader is None:
                todo, self.to_load = sorted(self.to_load), set()
                self.loader = self._load(todo)
            try:
                next(self.loader)
            except StopIteration:
                self.loader = None
            return
        link = next(link for link in self.links if f"link{link.id}" == key)
        if link.task is None:
            link.task = self._gateway_frame(link, link.up.popleft())
        try:
            next(link.task)
        except StopIteration:
            link.task = None

    def _gateway_frame(self, link: Link, frame: Subscribe | Unsubscribe
                       ) -> Generator[None, None, None]:
        if frame.epoch > self.ring.epoch:
            self.refresh()
        if isinstance(frame, Unsubscribe):
            for stream in frame.streams:
                self._unsubscribe(link, stream)
            return
        yield from self._subscribe(link, list(frame.streams), dict(frame.after), frame.id)

    def _subscribe(self, link: Link, streams: list[str], after: dict[str, int],
                   frame_id: int) -> Generator[None, None, None]:
        moved = [s for s in streams if not self.owns(s)]
        mine = [s for s in streams if s not in set(moved)]
        yield from self._load(mine)
        for stream in mine:
            if stream not in self.streams or not self.streams[stream].loaded:
                yield from self._load([stream])  # lost and regained while we awaited
            if link.closed or not self.owns(stream) or stream not in self.streams:
                continue
            self.subs.setdefault(stream, set()).add(link)
            link.streams.add(stream)
            if stream in after:
                yield from self._catch_up(link, stream, after[stream])
        moved += [s for s in mine if s not in link.streams]
        positions = {s: self.streams[s].head for s in mine
                     if s in link.streams and s in self.streams and self.streams[s].loaded}
        self._queue(link, Subscribed(frame_id, tuple(moved), positions))

    def _catch_up(self, link: Link, stream: str, after: int) -> Generator[None, None, None]:
        state = self.streams[stream]
        backlog = state.backlog(after)
        if backlog is not None:
            for seq, _ in backlog:
                self._queue(link, Item(stream, seq))
            return
        link.holding[stream] = []
        upto = state.head
        yield  # the event log fetch: live events of this stream are held meanwhile
        for seq in self.log.fetch(stream, after, upto):
            self._queue(link, Item(stream, seq))
        held = link.holding.pop(stream, [])
        for item in held:
            self._queue(link, item)

    def _unsubscribe(self, link: Link, stream: str) -> None:
        link.streams.discard(stream)
        link.holding.pop(stream, None)
        subscribers = self.subs.get(stream)
        if subscribers is not None:
            subscribers.discard(link)
            if not subscribers:
                del self.subs[stream]

    def drop_link(self, link: Link) -> None:
        """The gateway closed the socket: what was on its way either side is gone."""
        if link.closed:
            return
        for stream in sorted(link.streams):
            self._unsubscribe(link, stream)
        self.links.remove(link)
        link.closed = True
        link.task = None
        link.up.clear()
        link.down.clear()

    def _load(self, streams: list[str]) -> Generator[None, None, None]:
        todo = [s for s in streams if not self._state(s).loaded]
        if not todo:
            return
        heads = {s: self.log.head(s) for s in todo}
        yield  # the heads come back later: the ring and the streams may have moved on
        for stream, head in heads.items():
            state = self.streams.get(stream)
            if state is not None and not state.loaded and self.owns(stream):
                self._fanout(stream, state.load(head))

    def gaps(self) -> list[str]:
        return [s for s, state in sorted(self.streams.items()) if state.gap is not None]

    def repair(self, stream: str) -> None:
        """_repair, once its wait is over: fill gaps from the log while there are any; skip
        a hole only when the log failed to fill it REPAIR_ROUNDS times in a row."""
        failures = 0
        while failures < REPAIR_ROUNDS:
            state = self.streams.get(stream)
            if state is None or state.gap is None:
                return
            first, upto = state.gap
            for seq in self.log.fetch(stream, first - 1, upto - 1):
                self._fanout(stream, state.offer(seq, payload(stream, seq)))
            failures = failures + 1 if state.gap is not None and state.gap[0] == first else 0
        state = self.streams.get(stream)
        if state is not None and state.gap is not None:
            self._fanout(stream, state.skip_gap())

    def check_heads(self) -> None:
        for stream in sorted(self.subs):
            state = self.streams.get(stream)
            if state is not None and state.loaded:
                state.saw_head(self.log.head(stream))

    def _on_ring_change(self, before: Ring, after: Ring) -> None:
        lost = [s for s in sorted(set(self.subs) | set(self.streams)) if not self.owns(s, after)]
        by_link: dict[int, tuple[Link, list[str]]] = {}
        for stream in lost:
            for link in sorted(self.subs.pop(stream, set()), key=by_id):
                link.streams.discard(stream)
                link.holding.pop(stream, None)
                by_link.setdefault(link.id, (link, []))[1].append(stream)
            self.streams.pop(stream, None)
        for link, streams in by_link.values():
            self._queue(link, Moved(tuple(streams)))


# --- gateway ---------------------------------------------------------------------------------

# a gateway task: yields (upstream, request id) to wait for that answer (None: link down)
Task = Generator[tuple["Upstream", int], "Subscribed | None", Any]


class Upstream:
    """gateway_server/upstream.py: the gateway's side of its link to one ring slot."""

    def __init__(self, slot: str, url: str, link: Link) -> None:
        self.slot = slot
        self.url = url
        self.link = link
        self.subscribed: set[str] = set()
        self.pending: dict[int, set[str]] = {}  # request id -> streams not answered yet
        self.sent_from: dict[int, set[str]] = {}  # request id -> streams sent a position
        self.closed = False

    def held(self) -> set[str]:
        return self.subscribed.union(*self.pending.values())

    def forget(self, streams: Iterable[str]) -> set[str]:
        held = self.held()
        gone = {s for s in streams if s in held}
        self.subscribed.difference_update(gone)
        for asked in self.pending.values():
            asked.difference_update(gone)
        return gone


class Gateway:
    """gateway_server/server.py's Gateway, with one local client on every stream."""

    def __init__(self, store: RingStore, servers: dict[str, ChannelServer]) -> None:
        self.store = store
        self.servers = servers
        self.ring = Ring(RingConfig(0, {}))
        self.upstreams: dict[str, Upstream] = {}
        self.positions = Positions()
        self.local = set(STREAMS)
        self.delivered: dict[str, list[int]] = {s: [] for s in STREAMS}
        self.skipped: list[tuple[str, int]] = []  # Positions.answered reported a jump
        self.waiting: dict[int, tuple[Upstream, Task]] = {}  # request id -> waiting task
        self.ready: list[tuple[Task, Subscribed | None]] = []  # spawned or woken, not run yet
        self._ids = itertools.count(1)
        self._link_ids = itertools.count(1)

    def refresh(self) -> None:
        ring = self.store.current()
        if ring.epoch > self.ring.epoch:
            before, self.ring = self.ring, ring
            self._on_ring_change(before, ring)

    # tasks: nursery.start_soon puts one on the ready list; an answer wakes its waiter there
    def spawn(self, task: Task) -> None:
        self.ready.append((task, None))

    def run(self, index: int) -> None:
        task, value = self.ready.pop(index)
        try:
            up, request_id = task.send(value)
        except StopIteration:
            return
        self.waiting[request_id] = (up, task)

    def _on_ring_change(self, before: Ring, after: Ring) -> None:
        members = after.config.urls()
        for slot in sorted(self.upstreams):
            if slot not in members or self.upstreams[slot].url != members[slot]:
                self._cancel(self.upstreams.pop(slot))
        for slot, address in sorted(members.items()):
            if slot not in self.upstreams:
                link = self._link(address.removeprefix("ws://"))
                up = self.upstreams[slot] = Upstream(slot, address, link)
                self.spawn(self._resubscribe_all(up, after.epoch))  # Upstream.run
        self.spawn(self._rebalance())

    def _cancel(self, up: Upstream) -> None:
        """Upstream.cancel: the member left the ring or moved to another address."""
        up.closed = True
        self._disconnect(up)

    def _disconnect(self, up: Upstream) -> None:
        """The socket closes: what was on its way either side is gone, the server drops the
        link's subscriptions, requests waiting for an answer fail (TooSlowError)."""
        up.subscribed.clear()
        up.pending.clear()
        up.sent_from.clear()
        self.servers[up.link.process].drop_link(up.link)
        for request_id in sorted(self.waiting):
            if self.waiting[request_id][0] is up:
                self.ready.append((self.waiting.pop(request_id)[1], None))

    def reconnect(self, slot: str) -> None:
        """Upstream.run after the link broke: connect again, resubscribe what this slot owns."""
        up = self.upstreams[slot]
        self._disconnect(up)
        up.link = self._link(up.link.process)
        self.spawn(self._resubscribe_all(up, self.ring.epoch))

    def _link(self, process: str) -> Link:
        link = Link(next(self._link_ids), process)
        self.servers[process].links.append(link)
        return link

    def _wanted(self, slot: str) -> set[str]:
        try:
            return {s for s in self.local if self.ring.owner(s) == slot}
        except LookupError:
            return set()

    def _subscribe(self, up: Upstream, streams: Iterable[str], epoch: int) -> Task:
        """Upstream.subscribe: returns the streams the server refused as moved."""
        streams = sorted(set(streams))
        if up.closed:
            raise TooSlow
        if not streams:
            return []
        request_id = next(self._ids)
        after = self.positions.of(streams)
        up.pending[request_id] = set(streams)
        up.sent_from[request_id] = set(after)
        up.link.up.append(Subscribe(request_id, epoch, tuple(streams), after))
        answer = yield up, request_id
        if answer is None:
            raise TooSlow
        return list(answer.moved)

    def _unsubscribe(self, up: Upstream, streams: Iterable[str], epoch: int) -> None:
        streams = sorted(up.forget(streams))
        if up.closed or not streams:
            return
        up.link.up.append(Unsubscribe(epoch, tuple(streams)))

    def _resubscribe_all(self, up: Upstream, epoch: int) -> Task:
        """Upstream.run, once connected: subscribe everything this slot should serve us."""
        if up.closed:
            return  # cancelled before it connected
        try:
            yield from self._subscribe(up, self._wanted(up.slot), epoch)
        except TooSlow:
            pass  # Upstream.run reconnects; here the upstream is gone for good

    def _rebalance(self) -> Task:
        epoch = self.ring.epoch
        for slot, up in sorted(self.upstreams.items()):
            self._unsubscribe(up, up.held() - self._wanted(slot), epoch)
        yield from self.ensure_subscribed(set(self.local))

    def ensure_subscribed(self, streams: set[str]) -> Task:
        """ensure_subscribed: rounds under the newest ring until nothing is left (the
        deadline there is ENSURE_ROUNDS here); owners are asked one after another, one of
        the interleavings of the parallel requests there."""
        for _ in range(ENSURE_ROUNDS):
            streams = {s for s in streams if s in self.local}
            if not streams:
                return True
            ring = self.ring
            left: set[str] = set()
            try:
                owners = ring.owners(sorted(streams))
            except LookupError:
                owners = {}
                left = set(streams)
            for slot, group in sorted(owners.items()):
                up = self.upstreams.get(slot)
                need = [s for s in group if up is None or s not in up.subscribed]
                if up is None:
                    left.update(need)
                elif need:
                    try:
                        left.update((yield from self._subscribe(up, need, ring.epoch)))
                    except TooSlow:
                        left.update(s for s in need if s not in up.subscribed)
            streams = left
            if streams:
                self.refresh()
        return not streams

    def _resync(self, stream: str) -> Task:
        try:
            ring = self.ring
            up = self.upstreams.get(ring.owner(stream))
            if up is not None:
                moved = yield from self._subscribe(up, [stream], ring.epoch)
                if moved:
                    yield from self.ensure_subscribed({stream})
        except (LookupError, TooSlow):
            pass
        self.positions.resync_failed(stream)  # (a finally: clause there)

    # Upstream._read -> Gateway._on_frame / _on_subscribed
    def on_frame(self, slot: str) -> None:
        up = self.upstreams[slot]
        frame = up.link.down.popleft()
        if isinstance(frame, Item):
            verdict = self.positions.judge(frame.stream, frame.seq)
            if verdict == "deliver":
                self.delivered[frame.stream].append(frame.seq)
            elif verdict == "resync":
                self.spawn(self._resync(frame.stream))
        elif isinstance(frame, Subscribed):
            asked = up.pending.pop(frame.id, set())
            caught_up = up.sent_from.pop(frame.id, set())
            up.subscribed.update(asked - set(frame.moved))
            for stream, seq in sorted(frame.positions.items()):
                if stream in self.local:
                    skipped = self.positions.answered(stream, seq, stream in caught_up)
                    if skipped:
                        self.skipped.append((stream, skipped))
            waiter = self.waiting.pop(frame.id, None)
            if waiter is not None:
                self.ready.append((waiter[1], frame))
        else:  # Moved
            streams = [s for s in frame.streams if s in self.local]
            up.forget(streams)
            self.refresh()
            if streams:
                self.spawn(self.ensure_subscribed(set(streams)))


class Admin:
    """The admin server's forwarding, with the webapp's notifications in its inbox."""

    def __init__(self, store: RingStore) -> None:
        self.store = store
        self.ring = store.current()
        self.inbox: list[tuple[str, int]] = []

    def refresh(self) -> None:
        self.ring = max(self.ring, self.store.current(), key=lambda r: r.epoch)

    def forward(self, index: int, servers: dict[str, ChannelServer]) -> None:
        stream, seq = self.inbox.pop(index)
        server = servers[self.ring.process(stream)]
        if not server.on_event(self.ring.epoch, stream, seq):
            self.refresh()  # "moved": re-read the ring; the event goes out again later
            self.inbox.append((stream, seq))


# --- the state machine -----------------------------------------------------------------------


def member(process: str, state: str = "active") -> Member:
    return Member(url=url(process), state=state, process=process)


class Handoff(RuleBasedStateMachine):
    """Six channel server processes (two in the first ring), one admin, one gateway with a
    client on every stream. Each rule is one thing that can happen next: a commit, a lost or
    delivered notification, a ring change, a process learning the ring, one step of a server
    task, a gateway frame or task, a head check or repair, a broken link; or many of those in
    an order hypothesis picks, or the whole cluster quiescing (then liveness is checked)."""

    def __init__(self) -> None:
        super().__init__()
        self.log = EventLog()
        self.store = RingStore(RingConfig(1, {"s1": member("p1"), "s2": member("p2")}))
        self.servers = {p: ChannelServer(p, self.store, self.log) for p in PROCESSES}
        self.admin = Admin(self.store)
        self.gateway = Gateway(self.store, self.servers)
        self.gateway.refresh()  # links to every member; subscribes every stream "from now"
        self.settle()
        assert self.gateway.positions.pos == dict.fromkeys(STREAMS, 0)

    # --- the webapp: commits and notifications ---

    @rule(stream=st.sampled_from(STREAMS), lost=st.lists(st.booleans(), min_size=1, max_size=5))
    def commit(self, stream: str, lost: list[bool]) -> None:
        """A few commits; a notification is lost if the webapp crashes before it notifies."""
        for notification_lost in lost:
            seq = self.log.commit(stream)
            if not notification_lost:
                self.admin.inbox.append((stream, seq))

    @precondition(lambda self: self.admin.inbox)
    @rule(data=st.data())
    def lose_notification(self, data: st.DataObject) -> None:
        self.admin.inbox.pop(data.draw(st.integers(0, len(self.admin.inbox) - 1), "lost"))

    @precondition(lambda self: self.admin.inbox)
    @rule(data=st.data())
    def deliver_notification(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.admin.inbox) - 1), "notification")
        self.admin.forward(index, self.servers)

    # --- ring changes (the ring manager / `backchannel ring ...`) ---

    @property
    def config(self) -> RingConfig:
        return self.store.config

    def _free_processes(self) -> list[str]:
        taken = {m.process for m in self.config.members.values()}
        return [p for p in PROCESSES if p not in taken]

    def _slots(self, *states: str) -> list[str]:
        return sorted(s for s, m in self.config.members.items() if m.state in states)

    @precondition(lambda self: len(self.config.members) < len(SLOTS))
    @rule(data=st.data(), state=st.sampled_from(["joining", "active"]))
    def add_member(self, data: st.DataObject, state: str) -> None:
        slot = next(s for s in SLOTS if s not in self.config.members)
        process = data.draw(st.sampled_from(self._free_processes()), "process")
        self.store.config = self.config.with_member(slot, member(process, state))

    @precondition(lambda self: self._slots("joining", "draining"))
    @rule(data=st.data())
    def activate(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(self._slots("joining", "draining")), "slot")
        self.store.config = self.config.with_state(slot, "active")

    @precondition(lambda self: len(self._slots("active")) > 1)
    @rule(data=st.data())
    def drain(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(self._slots("active")), "slot")
        self.store.config = self.config.with_state(slot, "draining")

    @precondition(lambda self: len(self.config.members) > 1)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        active = self._slots("active")
        slots = self._slots("joining", "draining") + (active if len(active) > 1 else [])
        slot = data.draw(st.sampled_from(sorted(slots)), "slot")
        self.store.config = self.config.without(slot)

    @rule(data=st.data())
    def replace(self, data: st.DataObject) -> None:
        """The ring manager points a slot at a standby process: exactly its streams move."""
        slot = data.draw(st.sampled_from(sorted(self.config.members)), "slot")
        process = data.draw(st.sampled_from(self._free_processes()), "standby")
        state = self.config.members[slot].state
        self.store.config = self.config.with_member(slot, member(process, state))

    # --- processes learning the ring (each polls Redis on its own schedule) ---

    @rule()
    def admin_learns_ring(self) -> None:
        self.admin.refresh()

    @rule(process=st.sampled_from(PROCESSES))
    def server_learns_ring(self, process: str) -> None:
        self.servers[process].refresh()

    @rule()
    def gateway_learns_ring(self) -> None:
        self.gateway.refresh()

    # --- channel servers ---

    def _runnable(self) -> list[tuple[str, str]]:
        return [(name, key) for name, server in self.servers.items()
                for key in server.runnable()]

    @precondition(lambda self: self._runnable())
    @rule(data=st.data(), steps=st.integers(1, 3))
    def server_step(self, data: st.DataObject, steps: int) -> None:
        name, key = data.draw(st.sampled_from(self._runnable()), "server task")
        for _ in range(steps):
            if key in self.servers[name].runnable():
                self.servers[name].step(key)

    def _gaps(self) -> list[tuple[str, str]]:
        return [(name, s) for name, server in self.servers.items() for s in server.gaps()]

    @precondition(lambda self: self._gaps())
    @rule(data=st.data())
    def server_repair(self, data: st.DataObject) -> None:
        name, stream = data.draw(st.sampled_from(self._gaps()), "repair")
        self.servers[name].repair(stream)

    @rule(process=st.sampled_from(PROCESSES))
    def server_head_check(self, process: str) -> None:
        self.servers[process].check_heads()

    # --- the gateway ---

    def _frames(self) -> list[str]:
        return [slot for slot, up in sorted(self.gateway.upstreams.items()) if up.link.down]

    @precondition(lambda self: self._frames())
    @rule(data=st.data(), count=st.integers(1, 4))
    def gateway_frames(self, data: st.DataObject, count: int) -> None:
        slot = data.draw(st.sampled_from(self._frames()), "frames from")
        for _ in range(count):
            if slot in self._frames():
                self.gateway.on_frame(slot)

    @precondition(lambda self: self.gateway.upstreams)
    @rule(data=st.data())
    def link_breaks(self, data: st.DataObject) -> None:
        """A gateway <-> channel server socket drops (a network blip); the gateway reconnects."""
        self.gateway.reconnect(data.draw(st.sampled_from(sorted(self.gateway.upstreams)), "slot"))

    @precondition(lambda self: self.gateway.ready)
    @rule(data=st.data())
    def gateway_task(self, data: st.DataObject) -> None:
        self.gateway.run(data.draw(st.integers(0, len(self.gateway.ready) - 1), "task"))

    # --- properties ---

    @invariant()
    def delivered_in_order_exactly_once(self) -> None:
        for stream, got in self.gateway.delivered.items():
            # subscribed at position 0 before any commit: the first delivered seq is 1
            assert got == list(range(1, len(got) + 1)), (stream, got)
            assert len(got) <= self.log.head(stream)
        assert not self.gateway.skipped, f"gateway position jumped: {self.gateway.skipped}"

    @rule(schedule=SCHEDULES)
    def run_a_while(self, schedule: list[int]) -> None:
        """Many small steps: each number picks one of the steps possible then (see _work)."""
        for choice in schedule:
            work = self._work()
            if not work:
                return
            work[choice % len(work)]()

    @rule(schedule=SCHEDULES)
    def settle_and_check(self, schedule: list[int]) -> None:
        self.settle(schedule)
        self.check_everything_delivered()

    def teardown(self) -> None:
        self.settle()
        self.delivered_in_order_exactly_once()
        self.check_everything_delivered()

    def check_everything_delivered(self) -> None:
        for stream, got in self.gateway.delivered.items():
            assert got == list(range(1, self.log.head(stream) + 1)), (stream, got)
        # and the gateway's bookkeeping is true: it believes it is subscribed exactly where the
        # owners have it subscribed (else the next ring change that brings a stream back to a
        # slot the gateway wrongly believes it is subscribed at loses that stream for good)
        for slot, up in sorted(self.gateway.upstreams.items()):
            wanted = {s for s in STREAMS if self.gateway.ring.owner(s) == slot}
            assert up.subscribed == up.link.streams == wanted, (
                slot, sorted(up.subscribed), sorted(up.link.streams), sorted(wanted))

    def _work(self) -> list[Callable[[], None]]:
        """Every step some process could take now, but head checks (no ring changes, no loss)."""
        current = self.store.current().epoch
        learners: list[Admin | Gateway | ChannelServer] = [
            self.admin, self.gateway, *self.servers.values()]
        work: list[Callable[[], None]] = [p.refresh for p in learners if p.ring.epoch < current]
        work += [partial(self.admin.forward, i, self.servers)
                 for i in range(len(self.admin.inbox))]
        work += [partial(self.gateway.run, i) for i in range(len(self.gateway.ready))]
        work += [partial(self.servers[name].step, key) for name, key in self._runnable()]
        work += [partial(self.gateway.on_frame, slot) for slot in self._frames()]
        work += [partial(self.servers[name].repair, s) for name, s in self._gaps()]
        return work

    def settle(self, schedule: list[int] | None = None) -> None:
        """Quiesce: everyone learns the ring, every held notification goes out, every task and
        queue drains, head checks and repairs run, until nothing is left to do: in the order
        ``schedule`` picks, over and over (none: the first possible step first)."""
        choices = itertools.cycle(schedule or [0])
        for _ in range(SETTLE_STEPS):
            work = self._work()
            if not work:
                for server in self.servers.values():
                    server.check_heads()
                work = self._work()
            if not work:
                assert not self.gateway.waiting, "a gateway task waits for an answer forever"
                return
            work[next(choices) % len(work)]()
        raise AssertionError("the cluster did not quiesce")


# A failure is shrunk (a minute or more), then replayed from the example database at once.
Handoff.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None,
                                     report_multiple_bugs=False)
TestHandoff = Handoff.TestCase


# --- the protocol violations the machine above found, as fixed scenarios ---------------------
# Initial ring (epoch 1): slot s1 = p1 owns C2 and U1, slot s2 = p2 owns C1; the gateway is
# subscribed to all three at position 0 and nothing is committed yet.


def drain_gateway(machine: Handoff) -> None:
    while machine.gateway.ready:
        machine.gateway.run(0)


def test_repair_fills_every_hole_the_event_log_has():
    """Four notifications of one stream lost, the later ones delivered: the owner's repair
    must fetch every missing seq, not give up (skip_gap) after three rounds of one hole each."""
    machine = Handoff()
    p2 = machine.servers["p2"]
    for _ in range(8):
        machine.log.commit("C1")  # the notifications of 1, 3, 5 and 7 are lost
    for seq in (2, 4, 6, 8):
        assert p2.on_event(1, "C1", seq)
    p2.repair("C1")
    machine.settle()
    assert machine.gateway.delivered["C1"] == list(range(1, 9))
    assert not machine.gateway.skipped


def test_gateway_does_not_keep_a_subscription_the_owner_dropped():
    """A subscribe's answer and a "moved" for the same streams, read before the subscribing
    task resumes: Upstream.subscribe then marks the streams subscribed at a server that has
    just dropped them, and when the ring brings them back there nobody subscribes again."""
    machine = Handoff()
    gateway, p2 = machine.gateway, machine.servers["p2"]
    machine.store.config = machine.config.without("s1")  # epoch 2: p2 owns everything
    gateway.refresh()
    drain_gateway(machine)  # _rebalance: subscribe C2, U1 at p2
    p2.step("link2")  # loads C2 and U1 (awaits the event log)
    p2.step("link2")  # answers "subscribed"
    machine.store.config = machine.config.with_member("s1", member("p1"))  # epoch 3
    p2.refresh()  # p2 drops C2 and U1: "moved" follows its answer on the link
    gateway.refresh()
    drain_gateway(machine)  # its _rebalance: nothing at s2 to unsubscribe yet
    gateway.on_frame("s2")  # the answer: wakes the subscribing task
    gateway.on_frame("s2")  # "moved": C2 and U1 are not in s2's subscribed set yet
    drain_gateway(machine)  # the subscribing task: subscribed |= {C2, U1}
    machine.settle()
    assert gateway.upstreams["s2"].subscribed == gateway.upstreams["s2"].link.streams
    machine.store.config = machine.config.without("s1")  # epoch 4: back on p2
    machine.commit("C2", [False])
    machine.settle()
    assert gateway.delivered["C2"] == [1]


def test_subscribe_survives_its_stream_moving_away_and_back_while_it_loads():
    """_subscribe awaits the event log; the stream moves away (its state is forgotten) and
    back meanwhile: _catch_up must not assume the state is still there."""
    machine = Handoff()
    p2 = machine.servers["p2"]
    machine.store.config = machine.config.without("s1")  # epoch 2: p2 owns everything
    machine.gateway.refresh()
    drain_gateway(machine)  # subscribe C2, U1 at p2, after 0
    p2.step("link2")  # reads their heads from the event log...
    machine.store.config = machine.config.with_member("s1", member("p1"))
    p2.refresh()  # ...while C2 and U1 move to s1 (their states are forgotten)...
    machine.store.config = machine.config.without("s1")
    p2.refresh()  # ...and back
    p2.step("link2")  # KeyError: 'C2' in _catch_up (the link handler dies)
    machine.commit("C2", [False])
    machine.settle()
    assert machine.gateway.delivered["C2"] == [1]


def test_a_second_from_now_answer_does_not_move_a_new_position():
    """Outside the machine above (its streams all start at 0): a stream subscribed "from
    now" (a client joins it) while the ring moves it is subscribed from now at both owners;
    the first answer sets the gateway's position, the second must not jump it past events
    committed in between."""
    machine = Handoff()
    gateway = machine.gateway
    up = gateway.upstreams["s2"]
    gateway.positions.forget("C1")  # the only client on C1 left...
    up.subscribed.discard("C1")
    machine.servers["p2"]._unsubscribe(up.link, "C1")
    gateway.spawn(gateway.ensure_subscribed({"C1"}))  # ...and a client joins it again
    drain_gateway(machine)  # subscribe C1 at p2, from now
    machine.store.config = machine.config.with_member("s3", member("p3"))  # C1 -> p3
    gateway.refresh()
    drain_gateway(machine)  # subscribe C1 at p3, from now (no position yet)
    machine.servers["p2"].step("link2")
    gateway.on_frame("s2")  # p2's answer: C1 starts at 0
    assert gateway.positions.pos["C1"] == 0
    machine.commit("C1", [False, False])  # 1 and 2 come after the client's start
    machine.settle()  # p3 answers C1 at 2: the position jumps over 1 and 2
    assert gateway.delivered["C1"] == [1, 2]
    assert not gateway.skipped
