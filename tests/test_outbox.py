"""Notify on commit: events leave through the outbox only after their transaction commits,
once per committed attempt, chunked under the admin's limit, and a failed send is retried
in order instead of dropped. The transaction part runs against real MariaDB."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pymysql
import pytest

from tests.conftest import Cluster
from tests.test_deadlocks import FAST, with_db
from webapp import outbox as outbox_mod
from webapp.db import Database
from webapp.outbox import MAX_EVENTS_PER_SEND, Outbox
from webapp.store import streams
from webapp.store.streams import Posted


class FlakySend:
    """An admin that refuses the first ``failures`` sends, then takes everything."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[list[Posted]] = []

    async def __call__(self, posted: Sequence[Posted]) -> bool:
        if self.failures > 0:
            self.failures -= 1
            return False
        self.batches.append(list(posted))
        return True

    def seqs(self) -> list[int]:
        return [p.seq for batch in self.batches for p in batch]


def events(n: int, start: int = 1) -> list[Posted]:
    return [Posted("C1", seq, {"type": "message", "n": seq}) for seq in range(start, start + n)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_request_batch_goes_out_chunked_under_the_admin_limit() -> None:
    async def scenario() -> FlakySend:
        send = FlakySend(0)
        box = Outbox(send, deadline_s=1.0)
        with box.request() as batch:
            box.committed(events(1200))
        assert await box.flush(batch)
        return send

    send = run(scenario())
    assert [len(b) for b in send.batches] == [MAX_EVENTS_PER_SEND, MAX_EVENTS_PER_SEND, 200]
    assert send.seqs() == list(range(1, 1201))


def test_a_failed_send_is_retried_in_order_not_dropped() -> None:
    async def scenario() -> FlakySend:
        send = FlakySend(3)
        box = Outbox(send, deadline_s=1.0)
        runner = asyncio.create_task(box.run())
        with box.request() as batch:
            box.committed(events(5))
        assert not await box.flush(batch)  # the reply does not wait for the admin to heal
        with box.request() as batch:
            box.committed(events(3, start=6))
        await box.flush(batch)
        async with asyncio.timeout(10):
            while box.pending():
                await asyncio.sleep(0.01)
        runner.cancel()
        return send

    send = run(scenario())
    assert sorted(send.seqs()) == list(range(1, 9))
    assert len(send.seqs()) == 8, "each event sent once"


def test_a_hung_admin_costs_the_deadline_then_the_events_wait_for_retry() -> None:
    async def hang(posted: Sequence[Posted]) -> bool:
        await asyncio.sleep(3600)
        return True

    async def scenario() -> int:
        box = Outbox(hang, deadline_s=0.05)
        with box.request() as batch:
            box.committed(events(2))
        assert not await box.flush(batch)
        return box.pending()

    assert run(scenario()) == 2


def test_the_retry_queue_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_mod, "RETRY_QUEUE_MAX", 10)

    async def scenario() -> int:
        box = Outbox(FlakySend(10**6), deadline_s=1.0)
        with box.request() as batch:
            box.committed(events(25))
        await box.flush(batch)
        return box.pending()

    # beyond the bound, the event log and the channel servers' head checks deliver them
    assert run(scenario()) == 10


def test_events_are_handed_over_only_for_the_attempt_that_commits(cluster: Cluster) -> None:
    """A transaction that fails hands nothing over; one retried after a deadlock hands over
    the events of its committing attempt only."""
    stream = "CTESTOUTBOX" + "A"
    handed: list[list[Posted]] = []

    async def scenario(db: Database) -> None:
        db.committed = handed.append

        async def then_fail(cur: Any) -> None:
            await streams.append_event(cur, stream, lambda ts: {"type": "x", "ts": ts})
            raise RuntimeError("refused after appending")

        with pytest.raises(RuntimeError):
            await db.transact(stream, then_fail)
        assert handed == []

        attempts = 0

        async def deadlock_once(cur: Any) -> int:
            nonlocal attempts
            attempts += 1
            posted, _ = await streams.append_event(cur, stream,
                                                   lambda ts: {"type": "x", "n": attempts})
            if attempts == 1:
                raise pymysql.err.OperationalError(1213, "Deadlock found (simulated)")
            return posted.seq

        seq = await db.transact(stream, deadlock_once)
        assert attempts == 2
        assert [[(p.seq, p.event["n"]) for p in batch] for batch in handed] == [[(seq, 2)]]

    with_db(cluster, scenario, retry=FAST)


def test_appending_outside_a_transaction_is_refused() -> None:
    with pytest.raises(RuntimeError):
        from webapp import db

        db.on_commit(Posted("C1", 1, {}))
