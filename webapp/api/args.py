"""Declarative, typed arguments of Slack methods (Zulip's ``typed_endpoint``): a method lists
its arguments as ``name=Spec`` and receives them parsed, or the caller gets Slack's error
code for the first bad one. Slack takes every argument as a string in a form or query, or
typed in a JSON body; each spec accepts both.

Specs are checked in the order the method lists them, so put the one Slack checks first
(usually ``channel``) first.
"""

from __future__ import annotations

import abc
import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

from cluster import ids
from webapp.params import ApiError, encodable

CHANNEL_ID_RE = re.compile(r"^[CGD][A-Z0-9]{2,20}$")
USER_ID_RE = re.compile(r"^[UW][A-Z0-9]{2,20}$")
BOT_ID_RE = re.compile(r"^B[A-Z0-9]{2,20}$")
GROUP_ID_RE = re.compile(r"^S[A-Z0-9]{2,20}$")
CHANNEL_NAME_RE = re.compile(r"^#?[a-z0-9_\-]{1,80}$")
_INT_RE = re.compile(r"-?\d{1,18}")

Raw = dict[str, Any]


def _missing(value: Any) -> bool:
    return value is None or value == ""


class Spec(abc.ABC):
    """Parses one argument from the raw parameters; raises ApiError."""

    @abc.abstractmethod
    def parse(self, raw: Raw, name: str) -> Any: ...


def _as_text(value: Any, max_len: int) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not encodable(value):
        raise ApiError("invalid_arguments")
    if len(value) > max_len:
        raise ApiError("invalid_arguments")
    return value


@dataclasses.dataclass(frozen=True)
class Text(Spec):
    """A string; ``missing`` is the error when absent (else None), ``too_long`` when longer
    than ``max_len`` (else invalid_arguments)."""

    missing: str | None = None
    max_len: int = 4096
    too_long: str = "invalid_arguments"
    default: str | None = None

    def parse(self, raw: Raw, name: str) -> str | None:
        value = raw.get(name)
        if _missing(value):
            if self.missing:
                raise ApiError(self.missing)
            return self.default
        if isinstance(value, str) and len(value) > self.max_len and encodable(value):
            raise ApiError(self.too_long)
        return _as_text(value, self.max_len)


@dataclasses.dataclass(frozen=True)
class Int(Spec):
    """An integer, clamped to [lo, hi] as Slack does with ``limit``."""

    default: int = 0
    lo: int = -(2**62)
    hi: int = 2**62

    def parse(self, raw: Raw, name: str) -> int:
        value = raw.get(name)
        if _missing(value):
            return self.default
        if isinstance(value, bool):
            raise ApiError("invalid_arguments")
        if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
            value = int(value)
        if not isinstance(value, int):
            raise ApiError("invalid_arguments")
        return max(self.lo, min(self.hi, value))


@dataclasses.dataclass(frozen=True)
class Flag(Spec):
    default: bool = False

    def parse(self, raw: Raw, name: str) -> bool:
        value = raw.get(name)
        if _missing(value):
            return self.default
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
            return value.lower() in ("true", "1")
        raise ApiError("invalid_arguments")


@dataclasses.dataclass(frozen=True)
class Pattern(Spec):
    """An id of a known shape: ``missing`` when absent (None if optional), ``error`` when it
    is not shaped like one (Slack answers e.g. channel_not_found, not a type error)."""

    regex: re.Pattern[str]
    error: str
    missing: str | None = None
    wrong_type: str = "invalid_arguments"

    def parse(self, raw: Raw, name: str) -> str | None:
        value = raw.get(name)
        if _missing(value):
            if self.missing is None:
                return None
            raise ApiError(self.missing)
        if not isinstance(value, str):
            raise ApiError(self.wrong_type)
        if not self.regex.match(value):
            raise ApiError(self.error)
        return value


def channel(missing: str | None = "channel_not_found") -> Pattern:
    """A conversation id (C…, G…, D…)."""
    return Pattern(CHANNEL_ID_RE, "channel_not_found", missing)


def user(missing: str | None = "user_not_found", error: str = "user_not_found") -> Pattern:
    return Pattern(USER_ID_RE, error, missing, wrong_type=error)


@dataclasses.dataclass(frozen=True)
class ChannelRef(Spec):
    """A conversation id, a channel name (``general`` or ``#general``) or a user id (the DM
    with that user): returned as given, for the action to resolve."""

    missing: str = "channel_not_found"

    def parse(self, raw: Raw, name: str) -> str:
        value = raw.get(name)
        if _missing(value):
            raise ApiError(self.missing)
        if not isinstance(value, str):
            raise ApiError("invalid_arguments")
        if not (CHANNEL_ID_RE.match(value) or USER_ID_RE.match(value)
                or CHANNEL_NAME_RE.match(value)):
            raise ApiError("channel_not_found")
        return value


@dataclasses.dataclass(frozen=True)
class IdList(Spec):
    """Comma-separated ids (or a JSON list): at least ``min_n``, at most ``max_n``, each
    matching ``regex``; duplicates dropped, order kept."""

    regex: re.Pattern[str]
    error: str
    missing: str | None = None
    min_n: int = 0
    max_n: int = 1000
    too_many: str = "invalid_arguments"

    def parse(self, raw: Raw, name: str) -> list[str] | None:
        value = raw.get(name)
        if _missing(value):
            if self.missing is None:
                return None
            raise ApiError(self.missing)
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = list(value)
        else:
            raise ApiError("invalid_arguments")
        items = list(dict.fromkeys(items))
        if len(items) > self.max_n:
            raise ApiError(self.too_many)
        if len(items) < self.min_n:
            raise ApiError(self.missing or "invalid_arguments")
        for item in items:
            if not self.regex.match(item):
                raise ApiError(self.error)
        return items


@dataclasses.dataclass(frozen=True)
class Choices(Spec):
    """A comma-separated subset of ``allowed`` (``types=public_channel,im``)."""

    allowed: tuple[str, ...]
    default: tuple[str, ...]
    error: str = "invalid_types"

    def parse(self, raw: Raw, name: str) -> tuple[str, ...]:
        value = raw.get(name)
        if _missing(value):
            return self.default
        if isinstance(value, list):
            items = value
        elif isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        else:
            raise ApiError("invalid_arguments")
        if not items or not all(isinstance(v, str) and v in self.allowed for v in items):
            raise ApiError(self.error)
        return tuple(dict.fromkeys(items))


@dataclasses.dataclass(frozen=True)
class Ts(Spec):
    """A message ts ("seconds.micros"; a bare number of seconds is allowed where Slack
    allows it) as integer microseconds."""

    error: str
    missing: str | None = None
    bare_seconds: bool = True

    def parse(self, raw: Raw, name: str) -> int | None:
        value = raw.get(name)
        if _missing(value):
            if self.missing:
                raise ApiError(self.missing)
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = f"{value:.6f}" if isinstance(value, float) else str(value)
        if not isinstance(value, str) or len(value) > 32:
            raise ApiError(self.error)
        if self.bare_seconds and "." not in value:
            value += ".000000"
        try:
            return ids.parse_ts(value)
        except ValueError as exc:
            raise ApiError(self.error) from exc


@dataclasses.dataclass(frozen=True)
class Json(Spec):
    """A JSON value (typed in a JSON body, or a JSON string in a form): ``kind`` list or
    dict; ``error`` when it does not parse or is the wrong kind."""

    kind: type
    error: str = "invalid_arguments"
    max_bytes: int = 64 * 1024

    def parse(self, raw: Raw, name: str) -> Any:
        value = raw.get(name)
        if _missing(value):
            return None
        if isinstance(value, str):
            if len(value) > self.max_bytes:
                raise ApiError(self.error)
            try:
                value = json.loads(value, parse_constant=_no_constants)
            except (ValueError, RecursionError) as exc:
                raise ApiError(self.error) from exc
        if not isinstance(value, self.kind) or not encodable(value):
            raise ApiError(self.error)
        if len(json.dumps(value, ensure_ascii=False)) > self.max_bytes:
            raise ApiError(self.error)
        return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclasses.dataclass(frozen=True)
class Cursor(Spec):
    """An opaque pagination cursor we issued: base64 of ``<prefix>:<value>``; the value,
    or None when absent."""

    prefix: str

    def parse(self, raw: Raw, name: str) -> str | None:
        value = raw.get(name)
        if _missing(value):
            return None
        if not isinstance(value, str) or len(value) > 300:
            raise ApiError("invalid_cursor")
        try:
            text = base64.b64decode(value.encode("ascii"), validate=True).decode("ascii")
        except (ValueError, UnicodeError, binascii.Error) as exc:
            raise ApiError("invalid_cursor") from exc
        prefix, sep, rest = text.partition(":")
        if prefix != self.prefix or not sep or not rest:
            raise ApiError("invalid_cursor")
        return rest


def make_cursor(prefix: str, value: str | int) -> str:
    return base64.b64encode(f"{prefix}:{value}".encode()).decode()


@dataclasses.dataclass(frozen=True)
class Custom(Spec):
    """An argument with its own parser ``fn(raw value) -> value`` (raises ApiError)."""

    fn: Callable[[Any], Any]

    def parse(self, raw: Raw, name: str) -> Any:
        return self.fn(raw.get(name))


def parse_all(specs: dict[str, Spec], raw: Raw) -> dict[str, Any]:
    return {name: spec.parse(raw, name) for name, spec in specs.items()}


@dataclasses.dataclass(frozen=True)
class Limit(Int):
    """A page size: an Int clamped to [lo, hi], whose unreadable values are Slack's
    ``invalid_limit`` (conversations.list, conversations.members)."""

    error: str = "invalid_limit"

    def parse(self, raw: Raw, name: str) -> int:
        try:
            return super().parse(raw, name)
        except ApiError as exc:
            raise ApiError(self.error) from exc


_SECONDS_RE = re.compile(r"\d{1,12}(\.\d{0,6})?")


@dataclasses.dataclass(frozen=True)
class Seconds(Spec):
    """A Unix time in whole seconds (``post_at``, ``latest``): an integer, or a number
    with a fraction (dropped), typed or as a string; ``error`` when it is anything else,
    ``missing`` when absent (else None)."""

    error: str
    missing: str | None = None

    def parse(self, raw: Raw, name: str) -> int | None:
        value = raw.get(name)
        if _missing(value):
            if self.missing:
                raise ApiError(self.missing)
            return None
        if isinstance(value, bool):
            raise ApiError(self.error)
        if isinstance(value, int | float):
            value = repr(value) if isinstance(value, int) else f"{value:.6f}"
        if not isinstance(value, str) or not _SECONDS_RE.fullmatch(value.strip()):
            raise ApiError(self.error)
        return int(value.strip().partition(".")[0])


class Params:
    """Typed access to raw parameters by the same specs, for the internal endpoints
    (webapp/internal.py), which are not Slack methods and have no registration."""

    def __init__(self, raw: Raw) -> None:
        self.raw = raw

    def text(self, name: str, *, missing: str | None = None, max_len: int = 4096) -> str | None:
        return Text(missing=missing, max_len=max_len).parse(self.raw, name)

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        return Int(default, lo, hi).parse(self.raw, name)
