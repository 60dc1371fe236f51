"""The poster of scheduled messages (chat.scheduleMessage): every webapp runs it, every
``scheduled_poll_interval_s``. Webapps need no lock between them: each due message is
claimed by one of them (webapp/store/scheduled.py), and a claim left by a webapp that died
runs out and is taken again, without posting the message twice."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from webapp.runtime import Runtime

log = logging.getLogger(__name__)


async def run(rt: Runtime) -> None:
    """Forever: post what is due, then wait for the next round."""
    # imported here: the actions import the runtime, which starts this loop
    from webapp.actions import scheduled

    interval = max(0.05, rt.settings.scheduled_poll_interval_s)
    while True:
        try:
            handled = await scheduled.post_due(rt)
            if handled:
                log.info("scheduled messages handled=%d", handled)
        except Exception as exc:  # noqa: BLE001 - a failed round is retried next interval
            log.warning("scheduled messages round failed: %s", type(exc).__name__)
        await asyncio.sleep(interval)
