"""Webapp (asyncio: uvicorn + starlette, aiomysql, redis.asyncio): the Slack Web API.

It owns authentication, authorization, rate limits, idempotency and every write. A change is
committed in one single-shard transaction that also appends the event to its stream with the
next ``seq`` and ``ts``; only after commit is an admin server notified::

    client --POST /api/<method>--> [webapp: auth, tx on shard] --POST /notify--> admin_server

It also serves the internal endpoints of the real-time tier (ticket redemption for gateways,
event-log reads for channel servers repairing gaps) and the seeding used by the CLI.
"""
