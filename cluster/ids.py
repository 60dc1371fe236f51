"""Slack-shaped ids, tokens and message timestamps.

A message ``ts`` is "seconds.micros" and doubles as the message id within its channel, so it
must be unique and strictly increasing per channel: the webapp derives it from the wall clock
but never lets it go backwards or repeat (see :func:`next_ts_us`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TS_RE = re.compile(r"[0-9]{1,12}\.[0-9]{6}")  # ASCII digits only, matched whole


def new_id(prefix: str, length: int = 10) -> str:
    """'C' -> 'C7QX2M0ZK4W': prefix letter + random upper-case alphanumerics, like Slack."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_token(kind: str) -> str:
    """kind 'xoxp' (user) or 'xoxb' (bot)."""
    return f"{kind}-{secrets.token_hex(4)}-{secrets.token_urlsafe(24)}"


def hash_token(token: str) -> str:
    """Tokens are stored only as this digest, so a database dump leaks no credentials."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def now_us() -> int:
    return time.time_ns() // 1000


def next_ts_us(now: int, last: int) -> int:
    """The next ts for a channel: the clock, unless the clock is at or behind the last ts."""
    return max(now, last + 1)


def format_ts(ts_us: int) -> str:
    seconds, micros = divmod(ts_us, 1_000_000)
    return f"{seconds}.{micros:06d}"


def parse_ts(ts: str) -> int:
    """'1700000000.000123' -> 1700000000000123; raises ValueError on anything else."""
    if not isinstance(ts, str) or not TS_RE.fullmatch(ts):
        raise ValueError("invalid ts")
    seconds, micros = ts.split(".")
    return int(seconds) * 1_000_000 + int(micros)
