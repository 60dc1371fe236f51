"""What every Backchannel service shares: settings, ids and timestamps, the hash ring,
shard routing and the internal wire frames.

Everything here is loop-agnostic (plain functions and data) so that the asyncio webapp and
the trio real-time tier import the same code::

    client -> webapp -> admin_server -> channel_server -> gateway_server -> client
               \\_ cluster.shards          \\_ cluster.ring      \\_ cluster.wire
"""
