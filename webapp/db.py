"""Connection pools per database and the Vitess-style routing of a key to its shard."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator

import aiomysql

from cluster import shards
from cluster.settings import Settings

# INSERT IGNORE and IF NOT EXISTS are how we make writes idempotent; their notes are noise
warnings.filterwarnings("ignore", category=aiomysql.Warning)


class Database:
    def __init__(self, settings: Settings) -> None:
        shards.validate_shards(settings.chat_shards)
        self.settings = settings
        self._pools: dict[str, aiomysql.Pool] = {}

    async def open(self) -> None:
        names = ["directory"] + list(self.settings.chat_shards)
        for name in names:
            keyspace, shard = ("directory", None) if name == "directory" else ("chat", name)
            self._pools[name] = await aiomysql.create_pool(
                host=self.settings.mysql_host, port=self.settings.mysql_port,
                user=self.settings.mysql_user, password=self.settings.mysql_password,
                db=self.settings.db_name(keyspace, shard), autocommit=True,
                charset="utf8mb4", minsize=1, maxsize=self.settings.db_pool_size,
                pool_recycle=3600,
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
        async with self._pools["directory"].acquire() as conn, conn.cursor(
            aiomysql.DictCursor
        ) as cur:
            yield cur

    @contextlib.asynccontextmanager
    async def chat(self, key: str) -> AsyncIterator[aiomysql.DictCursor]:
        """A cursor on the shard that owns ``key`` (channel id or user id), autocommit."""
        async with self._pools[self.shard_of(key)].acquire() as conn, conn.cursor(
            aiomysql.DictCursor
        ) as cur:
            yield cur

    @contextlib.asynccontextmanager
    async def chat_tx(self, key: str) -> AsyncIterator[aiomysql.DictCursor]:
        """A single-shard transaction: committed on exit, rolled back on any exception."""
        async with self._pools[self.shard_of(key)].acquire() as conn:
            await conn.begin()
            try:
                async with conn.cursor(aiomysql.DictCursor) as cur:
                    yield cur
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
