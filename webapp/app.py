"""The Starlette application: routing of /api/<method>, auth, rate limits, error mapping,
and the internal endpoints used by the real-time tier."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cluster import wire
from cluster.settings import Settings
from webapp import api as slack_api
from webapp import internal
from webapp.params import (
    ApiError,
    is_multipart,
    parse_body,
    parse_multipart,
    query_params,
    read_body,
    token_from,
)
from webapp.runtime import Runtime

log = logging.getLogger(__name__)


def slack_json(body: dict[str, Any], status: int = 200,
               headers: dict[str, str] | None = None) -> Response:
    return Response(encode_reply(body), status_code=status, headers=headers,
                    media_type="application/json; charset=utf-8")


def encode_reply(body: dict[str, Any]) -> bytes:
    """orjson: a 1,000-user users.list page spent 28% of its time in json.dumps. It refuses
    what json allows (integers past 64 bits, which api.test may echo): those take json."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, ensure_ascii=False).encode("utf-8")


def api_error_response(exc: ApiError) -> Response:
    """Slack answers every ``ok: false`` with HTTP 200 except a rate limit (429 with
    Retry-After): SDKs treat any other status as a transport failure and retry it, the
    official Node SDK for up to 30 minutes."""
    return slack_json({"ok": False, "error": exc.error, **exc.extra},
                      429 if exc.status == 429 else 200, exc.headers)


def error_response(exc: ApiError) -> Response:
    return slack_json({"ok": False, "error": exc.error, **exc.extra}, exc.status, exc.headers)


async def _rate_limit(rt: Runtime, user_id: str, method: slack_api.Method, token: str) -> None:
    """The rate limit, and in the same Redis call whether the token was revoked since this
    process cached its identity (auth.revoke: docs/architecture.md)."""
    per_minute = method.per_minute(rt.settings.rate_limit_per_minute)
    wait_ms = await rt.limiter.wait_ms(rt.key("rl", user_id, method.name), per_minute,
                                       gate=rt.revoked_key(token))
    if wait_ms < 0:
        rt.forget_token(token)
        raise ApiError("invalid_auth")
    if wait_ms > 0:
        retry = max(1, math.ceil(wait_ms / 1000))
        raise ApiError("ratelimited", status=429, headers={"Retry-After": str(retry)})


async def api(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    name = request.path_params["method"]
    try:
        method = slack_api.find(name)
        params = query_params(request.scope["query_string"])
        if request.method == "POST":
            body = await read_body(request, rt.settings.max_body_bytes)
            ctype = request.headers.get("content-type", "")
            params.update(parse_multipart(body, ctype) if is_multipart(ctype)
                          else parse_body(body, ctype))
        token = token_from(request, params)
        who = None
        if method.auth:
            if token is None:
                raise ApiError("not_authed")
            who = await rt.identity(token)
            if who is None:
                raise ApiError("invalid_auth")
            await _rate_limit(rt, who.user_id, method, token)
        with rt.outbox.request() as committed:
            try:
                reply = await method.call(slack_api.Ctx(rt, who, params, token))  # type: ignore[arg-type]
            finally:
                # shielded: a client that hung up must not strand what was committed
                await asyncio.shield(rt.outbox.flush(committed))
        return slack_json({"ok": True, **reply})
    except ApiError as exc:
        return api_error_response(exc)
    except Exception:
        log.exception("method %s failed", name)
        return slack_json({"ok": False, "error": "internal_error"})


def require_internal(request: Request) -> None:
    rt: Runtime = request.app.state.rt
    if not wire.secret_matches(request.headers.get("x-backchannel-internal"),
                               rt.settings.internal_secret):
        raise ApiError("not_allowed", status=403)


async def health(request: Request) -> Response:
    return slack_json({"ok": True, "role": "webapp"})


def build_app(settings: Settings, on_ready: Any = None, on_stop: Any = None) -> Starlette:
    slack_api.load()
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt = Runtime(settings)
        await rt.open()
        app.state.rt = rt
        if on_ready is not None:
            await on_ready(rt)
        try:
            yield
        finally:
            if on_stop is not None:
                await on_stop(rt)
            await rt.close()

    routes = [
        Route("/health", health, methods=["GET"]),  # HEAD too: load balancers probe with it
        *(_without_head(r) for r in [
            Route("/api/{method}", api, methods=["GET", "POST"]),
            *internal.routes(require_internal, error_response, slack_json),
        ]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _without_head(route: Route) -> Route:
    """Starlette adds HEAD to every GET route and runs the GET handler for it, so
    ``HEAD /api/chat.postMessage?...`` would post. A route answers only the methods it
    names; HEAD gets Starlette's 405 (with ``Allow``, no body: docs/architecture.md)."""
    if route.methods is not None:
        route.methods.discard("HEAD")
    return route
