"""The Slack Web API: one module per Slack family (``api/chat.py``, ``api/conversations.py``,
…), each method a thin function registered with :func:`method`.

A registration carries what the dispatcher needs before the handler runs: the method's
name, whether it needs a token, its rate tier and its typed arguments. A handler receives a
:class:`Ctx` and the parsed arguments as keywords, calls an action (``webapp/actions``) and
returns the reply body without ``ok``. Failures raise ``ApiError`` with Slack's code.
Handlers never notify anyone: what their actions commit leaves through the outbox.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from webapp.api.args import Spec, parse_all
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.store.directory import Identity

# Slack's rate tiers (https://api.slack.com/apis/rate-limits), as shares of the configured
# ``rate_limit_per_minute``: tier 1 methods are the expensive, rarely needed ones; "post" is
# Slack's special tier of chat.postMessage and friends, the full budget.
Tier = Literal[1, 2, 3, 4, "post"]
TIER_SHARE: dict[Tier, float] = {1: 0.05, 2: 0.2, 3: 0.5, 4: 1.0, "post": 1.0}

FAMILIES = ("core", "chat", "conversations", "users", "team", "bots", "usergroups", "emoji", "rtm",
            "reactions", "pins", "search", "dnd")


@dataclasses.dataclass(frozen=True)
class Ctx:
    """What a handler knows about the call: the runtime and the caller (None only for
    methods that need no token)."""

    rt: Runtime
    who: Identity
    raw: dict[str, Any]
    # the caller's token, for the methods about the token itself (auth.revoke)
    token: str | None = None


Handler = Callable[..., Awaitable[dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    fn: Handler
    args: dict[str, Spec]
    tier: Tier
    auth: bool

    def per_minute(self, base: int) -> int:
        return max(1, int(base * TIER_SHARE[self.tier]))

    async def call(self, ctx: Ctx) -> dict[str, Any]:
        return await self.fn(ctx, **parse_all(self.args, ctx.raw))


METHODS: dict[str, Method] = {}


def method(name: str, /, *, tier: Tier, auth: bool = True,
           **args: Spec) -> Callable[[Handler], Handler]:
    """Register a Slack method. ``args`` are its typed arguments, checked in order."""

    def register(fn: Handler) -> Handler:
        if name in METHODS:
            raise ValueError(f"{name} registered twice")
        METHODS[name] = Method(name, fn, args, tier, auth)
        return fn

    return register


def find(name: str) -> Method:
    found = METHODS.get(name)
    if found is None:
        raise ApiError("unknown_method")
    return found


def load() -> dict[str, Method]:
    """Import every family so its methods register; idempotent."""
    for family in FAMILIES:
        importlib.import_module(f"webapp.api.{family}")
    return METHODS
