"""The event log's retention: events older than ``event_retention_s`` are deleted, once
per ``event_purge_interval_s`` across the whole cluster. The log serves RTM resume and gap
repair; history reads the messages table, which is never purged here."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from cluster import ids
from cluster.settings import Settings
from webapp import store
from webapp.db import Database

log = logging.getLogger(__name__)


async def purge_once(db: Database, settings: Settings) -> int:
    before_us = ids.now_us() - settings.event_retention_s * 1_000_000
    return await store.purge_events(db, before_us)


async def run(db: Database, client: aioredis.Redis, settings: Settings) -> None:
    """Forever: whichever webapp takes the interval's lock purges; the others skip it."""
    lock = settings.redis_prefix + "retention:lock"
    interval = max(1.0, settings.event_purge_interval_s)
    while True:
        try:
            if await client.set(lock, "1", nx=True, px=int(interval * 1000)):
                gone = await purge_once(db, settings)
                log.info("event log purge removed=%d", gone)
        except Exception as exc:  # noqa: BLE001 - a failed round is retried next interval
            log.warning("event log purge failed: %s", type(exc).__name__)
        await asyncio.sleep(interval)
