"""Coalescing concurrent requests into batches: one request in flight, and everything asked
for meanwhile goes out together as the next one. At low load a request goes out at once;
in a reconnect storm a thousand ticket redeems or subscriptions become a few dozen round
trips instead of a thousand (the per-request cost of HTTP and of a frame dominates).

Written against trio (it is used by the gateway only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

import trio

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BatchFailed(Exception):
    """The fetch of the batch this request was in failed (its cause is chained)."""


class Stopped(Exception):
    """The coalescer stopped running before this request was answered."""


@dataclasses.dataclass(eq=False)
class _Slot(Generic[V]):
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    value: V | None = None
    error: BaseException | None = None


class Coalescer(Generic[K, V]):
    """``await get(keys)`` -> {key: value}; ``fetch`` gets each batch (at most ``max_batch``
    keys) and returns values for the keys it knows (missing keys come back absent). An
    exception from ``fetch`` reaches every caller of that batch as BatchFailed. ``run``
    must be running (start it in a nursery)."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]],
                 max_batch: int = 500) -> None:
        self._fetch = fetch
        self.max_batch = max_batch
        self._queued: dict[K, _Slot[V]] = {}
        self._inflight: dict[K, _Slot[V]] = {}
        self._wake = trio.Event()
        self.batches = 0  # how many fetches were made (tests and metrics)

    async def get(self, keys: Iterable[K]) -> dict[K, V]:
        slots = {key: self._queued.setdefault(key, _Slot()) for key in keys}
        if not slots:
            return {}
        self._wake.set()
        for slot in slots.values():
            await slot.done.wait()
        for slot in slots.values():
            if slot.error is not None:
                raise BatchFailed(type(slot.error).__name__) from slot.error
        return {key: slot.value for key, slot in slots.items()  # type: ignore[misc]
                if slot.value is not None}

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._queued:
                    await self._one_batch()
        finally:
            # stopped (cancelled): nobody would ever answer these
            self._fail(self._inflight, Stopped())
            self._fail(self._queued, Stopped())

    async def _one_batch(self) -> None:
        keys = list(self._queued)[:self.max_batch]
        self._inflight = {key: self._queued.pop(key) for key in keys}
        self.batches += 1
        try:
            values = await self._fetch(keys)
        except Exception as exc:  # noqa: BLE001 - handed to every waiter of this batch
            self._fail(self._inflight, exc)
            return
        batch, self._inflight = self._inflight, {}
        for key, slot in batch.items():
            slot.value = values.get(key)
            slot.done.set()

    @staticmethod
    def _fail(slots: dict[K, _Slot[V]], exc: BaseException) -> None:
        for slot in slots.values():
            if not slot.done.is_set():
                slot.error = exc
                slot.done.set()
        slots.clear()
