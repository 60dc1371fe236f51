"""Vitess-style shard routing for the sharded `chat` keyspace.

keyspace id = first 8 bytes of md5(sharding key) (Vitess's ``binary_md5`` vindex); a shard
is a keyrange "start-end" of hex keyspace-id prefixes, start inclusive and end exclusive, an
empty bound meaning open. Locally each shard is its own MariaDB database; in production the
same SQL runs behind one vtgate with the VSchema from :func:`vschema`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def keyspace_id(key: str) -> bytes:
    return hashlib.md5(key.encode("utf-8")).digest()[:8]


def parse_keyrange(shard: str) -> tuple[bytes, bytes]:
    start, sep, end = shard.partition("-")
    if not sep or shard != shard.lower():
        raise ValueError(f"bad keyrange {shard!r} (lower-case hex, 'start-end')")
    return bytes.fromhex(start), bytes.fromhex(end)


def in_keyrange(ksid: bytes, shard: str) -> bool:
    start, end = parse_keyrange(shard)
    # bytes compare lexicographically, so a short bound like b'\x80' needs no padding
    return ksid >= start and (not end or ksid < end)


def validate_shards(shards: Sequence[str]) -> None:
    """The keyranges must cover the whole keyspace exactly once, in order."""
    ranges = [parse_keyrange(s) for s in shards]
    if not ranges or ranges[0][0] != b"" or ranges[-1][1] != b"":
        raise ValueError("shards must start and end open")
    for start, end in ranges:
        if end and start >= end:
            raise ValueError("a shard's start must be below its end")
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        if end != start or not end:
            raise ValueError("shards must be contiguous")


def shard_for(key: str, shards: Sequence[str]) -> str:
    ksid = keyspace_id(key)
    for shard in shards:
        if in_keyrange(ksid, shard):
            return shard
    raise LookupError(f"no shard covers {ksid.hex()}")


def vschema(shards: Sequence[str]) -> dict:
    """The VSchema for running the same tables behind vtgate."""
    return {
        "sharded": True,
        "vindexes": {"md5": {"type": "binary_md5"}},
        "tables": {
            "channels": {"column_vindexes": [{"column": "id", "name": "md5"}]},
            "channel_members": {"column_vindexes": [{"column": "channel_id", "name": "md5"}]},
            "stream_seq": {"column_vindexes": [{"column": "stream_id", "name": "md5"}]},
            "events": {"column_vindexes": [{"column": "stream_id", "name": "md5"}]},
            "messages": {"column_vindexes": [{"column": "channel_id", "name": "md5"}]},
            "user_channels": {"column_vindexes": [{"column": "user_id", "name": "md5"}]},
        },
        "shards": list(shards),
    }
