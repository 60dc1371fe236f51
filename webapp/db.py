"""Connection pools per database, the Vitess-style routing of a key to its shard, and the
retrying transaction every write goes through."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import logging
import random
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiomysql
import pymysql

from cluster import shards
from cluster.settings import Settings

# INSERT IGNORE and IF NOT EXISTS are how we make writes idempotent; their notes are noise
warnings.filterwarnings("ignore", category=aiomysql.Warning)

log = logging.getLogger(__name__)

T = TypeVar("T")
TxBody = Callable[[aiomysql.DictCursor], Awaitable[T]]

ER_LOCK_WAIT_TIMEOUT = 1205
ER_LOCK_DEADLOCK = 1213
# InnoDB rolls the loser back (1213) or gives up waiting (1205): the transaction did nothing
# and running it again is the documented remedy
RETRYABLE = frozenset({ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK})
# our transactions hold locks for milliseconds; the server default (50 s) would turn one stuck
# lock into a request that outlives every client timeout, long before a retry could help
LOCK_WAIT_TIMEOUT_S = 5


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff and full jitter: two transactions that
    deadlocked each other must not wake up in lockstep and collide again."""

    attempts: int = 5
    base_s: float = 0.01
    cap_s: float = 0.2

    def delay(self, attempt: int) -> float:
        """Pause after failed attempt number ``attempt`` (1-based)."""
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


# what the running transaction attempt registered to be sent once it commits (Zulip's
# send_event_on_commit): an attempt that rolls back, or is retried, takes its events with it
_ON_COMMIT: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "on_commit", default=None)


def on_commit(item: Any) -> None:
    """Register ``item`` (an appended event) with the running transaction attempt."""
    pending = _ON_COMMIT.get()
    if pending is None:
        raise RuntimeError("an event can only be appended inside a transaction")
    pending.append(item)


def error_code(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def is_retryable(exc: BaseException) -> bool:
    return error_code(exc) in RETRYABLE


class Database:
    def __init__(self, settings: Settings, retry: RetryPolicy | None = None,
                 lock_wait_timeout_s: int = LOCK_WAIT_TIMEOUT_S) -> None:
        shards.validate_shards(settings.chat_shards)
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.lock_wait_timeout_s = lock_wait_timeout_s
        # error code -> how many attempts it cost; read by tests and worth a metric later
        self.retries: collections.Counter[int] = collections.Counter()
        # receives what a committed transaction registered (the outbox); None drops it
        self.committed: Callable[[list[Any]], None] | None = None
        self._pools: dict[str, aiomysql.Pool] = {}

    async def open(self) -> None:
        names = ["directory"] + list(self.settings.chat_shards)
        wait_s = int(self.lock_wait_timeout_s)
        for name in names:
            keyspace, shard = ("directory", None) if name == "directory" else ("chat", name)
            self._pools[name] = await aiomysql.create_pool(
                host=self.settings.mysql_host, port=self.settings.mysql_port,
                user=self.settings.mysql_user, password=self.settings.mysql_password,
                db=self.settings.db_name(keyspace, shard), autocommit=True,
                charset="utf8mb4", minsize=1, maxsize=self.settings.db_pool_size,
                pool_recycle=3600,
                init_command=f"SET SESSION innodb_lock_wait_timeout={wait_s:d}",
            )

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
            await pool.wait_closed()
        self._pools.clear()

    def shard_of(self, key: str) -> str:
        return shards.shard_for(key, self.settings.chat_shards)

    @contextlib.asynccontextmanager
    async def directory(self) -> AsyncIterator[aiomysql.DictCursor]:
        """An autocommit cursor on the directory keyspace: for reads."""
        async with self._pools["directory"].acquire() as conn, conn.cursor(
            aiomysql.DictCursor
        ) as cur:
            yield cur

    @contextlib.asynccontextmanager
    async def chat(self, key: str) -> AsyncIterator[aiomysql.DictCursor]:
        """An autocommit cursor on the shard that owns ``key`` (channel or user id): reads."""
        async with self._pools[self.shard_of(key)].acquire() as conn, conn.cursor(
            aiomysql.DictCursor
        ) as cur:
            yield cur

    async def transact(self, key: str, fn: TxBody[T]) -> T:
        """Run ``fn(cur)`` as one transaction on the shard that owns ``key``; see _transact."""
        return await self._transact(self.shard_of(key), fn)

    def shards(self) -> list[str]:
        return list(self.settings.chat_shards)

    async def transact_shard(self, shard: str, fn: TxBody[T]) -> T:
        """Run ``fn(cur)`` as one transaction on a chat shard named directly (maintenance
        that is per shard, not per key); see _transact."""
        return await self._transact(shard, fn)

    async def transact_directory(self, fn: TxBody[T]) -> T:
        """Run ``fn(cur)`` as one transaction on the directory keyspace; see _transact."""
        return await self._transact("directory", fn)

    async def _transact(self, pool: str, fn: TxBody[T]) -> T:
        """Commit on success, roll back on any exception, and run the WHOLE of ``fn`` again
        after a deadlock or lock-wait timeout, up to ``retry.attempts`` times. ``fn`` must
        therefore have no effect outside the transaction: what it returns is taken from the
        attempt that committed only."""
        attempt = 1
        while True:
            pending: list[Any] = []
            token = _ON_COMMIT.set(pending)
            try:
                result = await self._once(self._pools[pool], fn)
            except pymysql.err.MySQLError as exc:
                code = error_code(exc)
                if code not in RETRYABLE or attempt >= self.retry.attempts:
                    raise
                self.retries[code] += 1
                log.warning("db retry pool=%s code=%s attempt=%d/%d", pool, code, attempt,
                            self.retry.attempts)
            else:
                if pending and self.committed is not None:
                    self.committed(pending)
                return result
            finally:
                _ON_COMMIT.reset(token)
            await asyncio.sleep(self.retry.delay(attempt))
            attempt += 1

    @staticmethod
    async def _once(pool: aiomysql.Pool, fn: TxBody[T]) -> T:
        async with pool.acquire() as conn, conn.cursor(TxCursor) as cur:
            try:
                result = await fn(cur)
                await cur.commit()
            except BaseException:
                if cur.started:
                    await _rollback(conn)
                raise
            return result


class TxCursor(aiomysql.DictCursor):
    """A transaction's cursor, which saves round trips: BEGIN, and the writes a body
    ``defer``s, travel with the next statement that needs an answer, or with the COMMIT.

    The statements go as one multi-statement query (aiomysql always allows them; every
    value is escaped by the driver as for any query). The server runs them in order and
    stops at the first error, which is raised here: the transaction is then rolled back,
    so nothing is half-written, and a deadlock (1213) or lock wait timeout (1205) from a
    deferred write retries the whole body like any other.

    A post is thus two round trips: BEGIN + lock (+ client_msg_id lookup), then the stream
    position, event and message writes + COMMIT."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[str] = ["BEGIN"]
        self.started = False  # something reached the server: a failure must roll back

    def defer(self, query: str, args: Any = None) -> None:
        """Run ``query`` before the next statement sent (its errors are raised there).
        For writes whose result nobody reads."""
        self._pending.append(self.mogrify(query, args))

    async def execute(self, query: str | bytes, args: Any = None) -> int:
        if self._pending and isinstance(query, str):
            return await self._send([self.mogrify(query, args)])
        if self._pending:  # executemany's bulk statements come as bytes: on their own
            await self._send([])
        self.started = True
        return await super().execute(query, args)

    async def select_many(self, queries: list[tuple[str, Any]]) -> list[list[dict[str, Any]]]:
        """Several reads in one round trip: each one's rows, in order."""
        await self._send([self.mogrify(query, args) for query, args in queries],
                         rewind=len(queries) - 1)
        out: list[list[dict[str, Any]]] = []
        for n in range(len(queries)):
            out.append(list(await self.fetchall()))
            if n < len(queries) - 1:
                await self.nextset()
        return out

    async def commit(self) -> None:
        """COMMIT, with whatever is still deferred; nothing at all for a body that sent
        nothing (no transaction was begun)."""
        if self._pending == ["BEGIN"]:
            return
        await self._send(["COMMIT"])

    async def _send(self, statements: list[str], rewind: int = 0) -> int:
        """Send what is pending and ``statements`` as one query; leave the cursor on the
        result of ``statements[-1 - rewind]`` (results before it are OK packets)."""
        batch, self._pending = self._pending + statements, []
        self.started = True
        await super().execute(";".join(batch))
        for _ in range(len(batch) - 1 - rewind):
            await self.nextset()
        return int(self._rowcount)


async def _rollback(conn: aiomysql.Connection) -> None:
    """Roll back without masking the error that got us here; a connection that cannot even
    roll back is closed, so the pool never hands out one stuck in a transaction."""
    try:
        await conn.rollback()
    except Exception:  # noqa: BLE001 - the caller re-raises the original error
        conn.close()
