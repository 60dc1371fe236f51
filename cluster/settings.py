"""Typed settings shared by every service, loadable from a TOML file and env vars.

Precedence: explicit defaults < TOML file < environment (``BACKCHANNEL_<FIELD>``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "BACKCHANNEL_"


@dataclasses.dataclass(frozen=True)
class Settings:
    # storage
    mysql_host: str = "127.0.0.1"
    mysql_port: int = 3306
    mysql_user: str = "backchannel"
    mysql_password: str = "backchannel"
    db_prefix: str = "backchannel"
    chat_shards: tuple[str, ...] = ("-80", "80-")
    db_pool_size: int = 10
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "bc:"
    # service discovery: filled in by `backchannel up` for the processes it starts
    admin_urls: tuple[str, ...] = ()
    presence_url: str = ""
    webapp_url: str = ""
    internal_secret: str = ""
    bind_host: str = "127.0.0.1"
    # webapp behaviour
    rtm_ticket_ttl_s: int = 30
    idempotency_ttl_s: int = 86400
    max_body_bytes: int = 1_048_576
    rate_limit_per_minute: int = 6000
    auth_cache_ttl_s: float = 30.0
    notify_attempts: int = 5
    notify_deadline_s: float = 3.0
    # webapp HTTP timeouts (docs/architecture.md, "Webapp timeouts"): a client that is slow
    # on purpose must not hold a socket. Headers: from a request's first byte (a new
    # connection's accept) to its last header line. Body: from the end of the headers to the
    # body's last byte. Keep-alive: idle between requests; it must stay above httpx's
    # keepalive_expiry (5 s), so that the real-time tier's pooled clients always drop an idle
    # connection first and never send a request into one the webapp is closing.
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    http_keepalive_timeout_s: float = 15.0
    # the durable event log: RTM resume replays from it for this long
    event_retention_s: int = 7 * 86400
    event_purge_interval_s: float = 3600.0
    # chat.scheduleMessage: every webapp looks for due scheduled messages this often (a row
    # claim makes each post exactly once); a message posts at most this late after post_at
    scheduled_poll_interval_s: float = 1.0
    # real-time tier behaviour
    # a client is slow only when its socket does not drain (docs/performance.md): unsent
    # bytes the gateway holds for it above client_slow_bytes for longer than
    # client_slow_after_s, or above client_max_bytes at all, close it
    client_slow_bytes: int = 262_144
    client_slow_after_s: float = 10.0
    client_max_bytes: int = 8_388_608
    # unsent bytes across a gateway's clients above which it stops reading its channel-server
    # links: the backlog then shows at the channel servers, which push back on posters
    gateway_backlog_bytes: int = 67_108_864
    typing_interval_s: float = 3.0  # per connection and channel, as Slack asks of clients
    resume_max_held: int = 10_000  # live events held per resuming stream while it replays
    gateway_drain_window_s: float = 10.0  # `gateway drain` spreads goodbyes over this
    link_queue_size: int = 4096
    # items queued to one gateway link above which its streams count as behind: posts to
    # them are answered ratelimited (Retry-After) until fanout catches up
    fanout_behind_items: int = 512
    ring_poll_interval_s: float = 0.25
    lease_ttl_s: float = 1.5
    gap_wait_s: float = 0.5
    head_check_interval_s: float = 1.0
    recent_buffer_size: int = 1000
    ring_manager_interval_s: float = 0.1
    presence_ttl_s: float = 30.0
    presence_report_interval_s: float = 10.0
    shutdown_grace_s: float = 5.0
    log_level: str = "INFO"

    def db_name(self, keyspace: str, shard: str | None = None) -> str:
        """MariaDB database for a keyspace (and shard); names stay [a-z0-9_]."""
        if shard is None:
            return f"{self.db_prefix}_{keyspace}"
        return f"{self.db_prefix}_{keyspace}_{shard_slug(shard)}"


def shard_slug(shard: str) -> str:
    """'-80' -> 'x_80', '80-' -> '80_x': a database-name-safe spelling of a keyrange."""
    start, _, end = shard.lower().partition("-")
    return f"{start or 'x'}_{end or 'x'}"


def _coerce(field: dataclasses.Field[Any], value: Any) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if kind.startswith("tuple"):
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return str(value)


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = path or env.get(ENV_PREFIX + "CONFIG")
    if path:
        with open(path, "rb") as fh:
            values.update(tomllib.load(fh))
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for name in fields:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = env[key]
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    return Settings(**{k: _coerce(fields[k], v) for k, v in values.items()})


def to_toml(settings: Settings) -> str:
    """Serialise settings for `backchannel up` to hand to the processes it starts."""
    lines = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, tuple):
            inner = ", ".join(_toml_str(v) for v in value)
            lines.append(f"{f.name} = [{inner}]")
        elif isinstance(value, bool | int | float):
            lines.append(f"{f.name} = {value!r}")
        else:
            lines.append(f"{f.name} = {_toml_str(value)}")
    return "\n".join(lines) + "\n"


def _toml_str(value: str) -> str:
    # JSON string escapes are a subset of TOML's, except surrogate pairs (ensure_ascii=False
    # avoids them) and raw DEL, which TOML forbids and JSON leaves alone
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
