"""cluster/batching.py: concurrent requests coalesce into batches, each caller gets its own
answers (or its batch's failure), and nothing waits forever. Timing with the autojump
clock; no real sleeps."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.batching import BatchFailed, Coalescer


class Backend:
    """Answers key -> key * 10 after a delay, except keys it refuses; records batches."""

    def __init__(self, delay: float = 1.0, refuse: frozenset[int] = frozenset(),
                 fail: bool = False) -> None:
        self.delay, self.refuse, self.fail = delay, refuse, fail
        self.batches: list[list[int]] = []

    async def fetch(self, keys: list[int]) -> dict[int, int]:
        self.batches.append(list(keys))
        await trio.sleep(self.delay)
        if self.fail:
            raise OSError("backend down")
        return {k: k * 10 for k in keys if k not in self.refuse}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), max_size=5), min_size=1, max_size=40),
       st.integers(1, 8))
def test_every_caller_gets_its_own_answers_in_few_batches(requests, max_batch):
    async def main() -> None:
        backend = Backend(refuse=frozenset({7}))
        coalescer = Coalescer(backend.fetch, max_batch)
        answers: dict[int, dict[int, int]] = {}

        async def ask(i: int, keys: list[int]) -> None:
            answers[i] = await coalescer.get(keys)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(coalescer.run)
            async with trio.open_nursery() as callers:
                for i, keys in enumerate(requests):
                    callers.start_soon(ask, i, keys)
            nursery.cancel_scope.cancel()
        for i, keys in enumerate(requests):
            assert answers[i] == {k: k * 10 for k in keys if k != 7}
        assert all(len(b) <= max_batch for b in backend.batches)
        distinct = {k for keys in requests for k in keys}
        # all asked at once: the first batch goes alone, the rest share as few as fit
        assert len(backend.batches) <= 1 + -(-len(distinct) // max_batch)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_lone_request_goes_out_at_once(autojump_clock):
    backend = Backend(delay=0.5)
    coalescer = Coalescer(backend.fetch)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coalescer.run)
        start = trio.current_time()
        assert await coalescer.get([3]) == {3: 30}
        assert trio.current_time() - start == pytest.approx(0.5)
        nursery.cancel_scope.cancel()


async def test_requests_made_while_one_is_in_flight_share_the_next(autojump_clock):
    backend = Backend(delay=1.0)
    coalescer = Coalescer(backend.fetch)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coalescer.run)
        nursery.start_soon(coalescer.get, [1])
        await trio.sleep(0.1)
        async with trio.open_nursery() as later:
            for k in range(2, 12):
                later.start_soon(coalescer.get, [k])
        nursery.cancel_scope.cancel()
    assert [sorted(b) for b in backend.batches] == [[1], list(range(2, 12))]


async def test_a_failed_batch_fails_its_callers_only(autojump_clock):
    backend = Backend(fail=True)
    coalescer = Coalescer(backend.fetch)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coalescer.run)
        with pytest.raises(BatchFailed):
            await coalescer.get([1, 2])
        backend.fail = False
        assert await coalescer.get([1, 2]) == {1: 10, 2: 20}
        nursery.cancel_scope.cancel()


async def test_callers_of_a_stopped_coalescer_do_not_wait_forever(autojump_clock):
    backend = Backend(delay=100.0)
    coalescer = Coalescer(backend.fetch)
    failures: list[BaseException] = []

    async def ask(keys: list[int]) -> None:
        try:
            await coalescer.get(keys)
        except BatchFailed as exc:
            failures.append(exc)

    async with trio.open_nursery() as outer:
        outer.start_soon(ask, [1])
        outer.start_soon(ask, [2])
        async with trio.open_nursery() as runner:
            runner.start_soon(coalescer.run)
            await trio.sleep(1)
            runner.cancel_scope.cancel()  # stops with [1] in flight and [2] queued
    assert len(failures) == 2
