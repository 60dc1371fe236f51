"""The one way events leave the webapp: after their transaction commits, never by hand.

The database hands every committed transaction's events to :meth:`Outbox.committed` (see
``webapp.db.on_commit``, Zulip's ``send_event_on_commit``). Inside a request, they wait in
the request's batch and :meth:`Outbox.flush` sends them before the reply, so a client that
got ``ok`` finds its event already on the way. Outside one (seeding, maintenance), they go
at once in the background.

A send goes to an admin server, retrying across admin servers for ``notify_deadline_s``. If
that fails the events are not dropped: they wait in a bounded retry queue that a background
task keeps sending with jittered backoff. The events are durable in the event log either
way; the retry makes them live again without waiting for a channel server's head check.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from prometheus_client import Counter

from webapp.store.streams import Posted

log = logging.getLogger(__name__)

# the admin server refuses a notify of more than 1,000 events
MAX_EVENTS_PER_SEND = 500
RETRY_QUEUE_MAX = 100_000
_RETRY_BASE_S = 0.2
_RETRY_CAP_S = 5.0

SENT = Counter("backchannel_webapp_outbox_events_total", "Events handed to admin servers",
               ["outcome"])

Send = Callable[[Sequence[Posted]], Awaitable[bool]]

_BATCH: contextvars.ContextVar[list[Posted] | None] = contextvars.ContextVar(
    "outbox_batch", default=None)


class Outbox:
    def __init__(self, send: Send, deadline_s: float) -> None:
        self._send = send
        self._deadline_s = deadline_s
        self._retry: deque[Posted] = deque()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def committed(self, posted: list[Posted]) -> None:
        batch = _BATCH.get()
        if batch is not None:
            batch.extend(posted)
        else:
            self._spawn(self._deliver(list(posted)))

    def ephemeral(self, stream: str, event: dict[str, Any]) -> None:
        """An event never stored (chat.postEphemeral): seq 0, so the real-time tier fans it
        out unordered and keeps no copy. It leaves with the request's committed events, after
        the handler returns; outside a request, at once. A failed send drops it (an
        ephemeral message is not guaranteed, as in Slack) rather than retry it late."""
        item = Posted(stream, 0, event)
        batch = _BATCH.get()
        if batch is not None:
            batch.append(item)
        else:
            self._spawn(self._deliver([item]))

    @contextlib.contextmanager
    def request(self) -> Iterator[list[Posted]]:
        """Collect what this request commits; the caller flushes it when the handler ends,
        whether it returned or raised (a committed step of a failed action still counts)."""
        batch: list[Posted] = []
        token = _BATCH.set(batch)
        try:
            yield batch
        finally:
            _BATCH.reset(token)

    async def flush(self, batch: list[Posted]) -> bool:
        if not batch:
            return True
        return await self._deliver(batch)

    async def _deliver(self, posted: list[Posted]) -> bool:
        ok = True
        for start in range(0, len(posted), MAX_EVENTS_PER_SEND):
            chunk = posted[start:start + MAX_EVENTS_PER_SEND]
            sent = False
            try:
                async with asyncio.timeout(self._deadline_s):
                    sent = await self._send(chunk)
            except TimeoutError:
                log.error("admin notify timed out events=%d", len(chunk))
            if sent:
                SENT.labels("sent").inc(len(chunk))
            else:
                ok = False
                self._later([p for p in chunk if p.seq > 0])
        return ok

    def _later(self, chunk: Sequence[Posted]) -> None:
        room = RETRY_QUEUE_MAX - len(self._retry)
        if room < len(chunk):
            # the event log still has them: channel servers' head checks deliver them
            SENT.labels("dropped").inc(len(chunk) - max(room, 0))
            log.error("outbox retry queue full, leaving %d events to the head check",
                      len(chunk) - max(room, 0))
        self._retry.extend(chunk[:max(room, 0)])
        SENT.labels("deferred").inc(min(len(chunk), max(room, 0)))
        self._wake.set()

    def pending(self) -> int:
        return len(self._retry)

    async def run(self) -> None:
        """Resend what failed, oldest first, until it goes through."""
        attempt = 0
        while True:
            await self._wake.wait()
            if not self._retry:
                self._wake.clear()
                continue
            chunk = [self._retry[i] for i in range(min(len(self._retry),
                                                       MAX_EVENTS_PER_SEND))]
            try:
                async with asyncio.timeout(self._deadline_s):
                    sent = await self._send(chunk)
            except TimeoutError:
                sent = False
            if sent:
                for _ in chunk:
                    self._retry.popleft()
                SENT.labels("resent").inc(len(chunk))
                attempt = 0
                continue
            attempt += 1
            await asyncio.sleep(random.uniform(0, min(_RETRY_CAP_S,
                                                      _RETRY_BASE_S * 2 ** attempt)))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
