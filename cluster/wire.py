"""Internal frames between the real-time services, all JSON text over WebSocket.

webapp -> admin    {"type":"hello","role":"webapp","name":W,"secret":..}   (first, or closed)
                   {"type":"notify","items":[{"id":N,"events":[{"stream":S,"seq":Q,
                                                                 "event":{...}}, ...]}, ...]}
admin -> webapp    {"type":"notified","items":[{"id":N,"ok":true,"behind":[S,...]}
                                              | {"id":N,"ok":false,"error":E}, ...]}
                   (a frame carries every notify queued meanwhile; each is answered by id,
                   answers ready together share a frame; an invalid notify is answered
                   "invalid_arguments", a frame that is not a notify closes the link)
admin  -> channel  {"type":"publish","id":N,"epoch":E,"items":[{"stream":S,"seq":Q,
                                                                "event":{...}}, ...]}
channel -> admin   {"type":"published","id":N,"epoch":E,"moved":[S,...],"behind":[S,...]}
                   (moved: streams not owned at epoch E or later, none of their items
                   taken; behind: taken streams with a subscribed gateway link holding more
                   than fanout_behind_items queued, which the webapp answers "ratelimited")
gateway -> channel {"type":"hello","role":"gateway","name":G,"secret":..}
                   {"type":"subscribe","id":N,"epoch":E,"streams":[...],"after":{S:Q}}
                   {"type":"unsubscribe","epoch":E,"streams":[...]}
                   {"type":"ephemeral","stream":S,"event":{...}}        (user_typing)
                   {"type":"replay","id":N,"stream":S,"after":A,"upto":U}
                                        (for one resuming client: the events A < seq <= U)
channel -> gateway {"type":"events","items":[ITEM, ...]}   (ITEM encoded once, see below)
                   {"type":"subscribed","id":N,"epoch":E,"moved":[...],"positions":{S:Q}}
                   {"type":"moved","epoch":E,"streams":[...]}
                   {"type":"replayed","id":N,"stream":S,"moved":B,"items":[ITEM, ...]}
                                        (at most one page; empty when the log has none)

``after`` maps a stream to the last seq the gateway has; a stream without one starts from
now. The channel server sends the missing events (recent buffer, else the event log), then
``subscribed`` with each stream's position, on the same ordered queue as live events.

An ITEM is ``{"stream":S,"seq":Q,"kind":K,"ref":R,"payload":"<the RTM event as JSON>"}``
(the payload carries ``"stream"`` and ``"seq"`` too: clients resume from them)
(plus ``"at":Q`` on channel_joined: the channel's seq before the join). The payload is the
exact text every client receives, so a gateway never re-encodes it; ``kind``/``ref`` let the
gateway react to events such as ``channel_joined`` without parsing the payload. Ephemeral
items have seq 0 and are not ordered.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from typing import Any

MAX_FRAME_BYTES = 4 * 1024 * 1024


class BadFrame(ValueError):
    """A frame that is not JSON, not an object, or lacks a field of the right type."""


def names(group: BaseExceptionGroup) -> str:
    """'ConnectionClosed, OSError': what a group of link errors held, for one log line."""
    return ", ".join(sorted({type(e).__name__ for e in group.exceptions}))


def secret_matches(given: str | None, secret: str) -> bool:
    """Constant-time check of the cluster's shared secret; an unset secret matches nothing."""
    return bool(secret) and isinstance(given, str) and hmac.compare_digest(
        given.encode(), secret.encode())


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def dumps_str(value: str) -> str:
    """A JSON string literal, for frames assembled around already-encoded items."""
    return json.dumps(value, ensure_ascii=False)


def loads(raw: str | bytes, *, typed: bool = True) -> dict[str, Any]:
    try:
        frame = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadFrame("not json") from exc
    if not isinstance(frame, dict) or typed and not isinstance(frame.get("type"), str):
        raise BadFrame("not a typed object")
    return frame


def field(frame: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = frame.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BadFrame(f"field {name!r} missing or of the wrong type")
    return value


def str_list(frame: dict[str, Any], name: str, limit: int = 100_000) -> list[str]:
    value = field(frame, name, list)
    if len(value) > limit or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
        raise BadFrame(f"field {name!r} must be a list of ids")
    return value


def encode_item(stream: str, seq: int, event: dict[str, Any]) -> str:
    """Encode one event once; the result is spliced into every gateway frame that carries it.

    An event may carry ``_at``, internal and never sent to clients: for ``channel_joined``
    it is the channel's seq just before the join, so the gateway subscribes the channel
    from there and misses nothing posted between the join and its subscription."""
    extra = ""
    if "_at" in event:
        event = dict(event)
        at = event.pop("_at")
        if type(at) is int:
            extra = f',"at":{at}'
    kind = event.get("type", "")
    ref = ""
    if kind in ("channel_joined", "channel_left", "im_created", "mpim_joined", "group_joined",
                "group_left"):
        chan = event.get("channel")
        ref = chan.get("id", "") if isinstance(chan, dict) else str(chan or "")
    elif kind == "user_typing":
        ref = str(event.get("user", ""))  # the typist's own sockets are skipped
    item = dumps({"stream": stream, "seq": seq, "kind": kind, "ref": ref,
                  "payload": client_payload(stream, seq, event)})
    return item[:-1] + extra + "}" if extra else item


def client_payload(stream: str, seq: int, event: dict[str, Any]) -> str:
    """The RTM text of a stream event: the event plus its position (``stream``, ``seq``) at
    top level, which resuming clients keep (docs/rtm.md). Ephemeral events (seq 0) have no
    position. Deterministic, so a replay from the log yields the bytes live clients got."""
    if seq <= 0:
        return dumps(event)
    return dumps({**event, "stream": stream, "seq": seq})


def events_frame(items: Iterable[str]) -> str:
    # Items are already-encoded JSON objects: joining them builds a valid JSON array without
    # decoding and re-encoding each event for every gateway.
    return '{"type":"events","items":[' + ",".join(items) + "]}"
