"""Turning an HTTP request into Slack Web API parameters, with Slack's error codes.

Slack accepts the same parameters in the query string, a form body or a JSON body; the
token comes from ``Authorization: Bearer`` or a ``token`` parameter.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from python_multipart import create_form_parser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartState
from starlette.requests import Request

MAX_FORM_PARTS = 1000


class ApiError(Exception):
    def __init__(self, error: str, status: int = 200, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = headers or {}
        self.extra = extra


async def read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise ApiError("request_too_large", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError("request_too_large", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    if not body.strip():
        return {}
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            doc = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ApiError("invalid_json") from exc
        if not isinstance(doc, dict):
            raise ApiError("invalid_json")
        return doc
    if ctype in ("application/x-www-form-urlencoded", "", "text/plain"):
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                              encoding="utf-8", errors="strict")
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError("invalid_form_data") from exc
        return dict(pairs)
    raise ApiError("invalid_form_data")


def is_multipart(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "multipart/form-data"


def parse_multipart(body: bytes, content_type: str) -> dict[str, Any]:
    """A ``multipart/form-data`` body (Slack accepts it for every method; the Node SDK
    sends it whenever a call carries a file): its text fields, decoded strictly as UTF-8.
    File parts are not arguments of any method here and are left out. A body cut short of
    its closing boundary is refused whole, not taken for the parts that did arrive."""
    fields: dict[str, Any] = {}

    def on_field(field: Any) -> None:
        if len(fields) >= MAX_FORM_PARTS:
            raise ValueError("too many parts")
        name, value = field.field_name, field.value or b""
        fields[name.decode("utf-8")] = value.decode("utf-8")

    try:
        parser = create_form_parser({"Content-Type": content_type}, on_field,
                                    lambda upload: upload.close())
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError, UnicodeDecodeError) as exc:
        raise ApiError("invalid_form_data") from exc
    if parser.parser.state != MultipartState.END:
        raise ApiError("invalid_form_data")
    return fields


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def query_params(raw: bytes) -> dict[str, Any]:
    """The query string, decoded strictly: bad UTF-8 is an error, not U+FFFD."""
    try:
        return dict(parse_qsl(raw.decode("ascii"), keep_blank_values=True,
                              encoding="utf-8", errors="strict"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError("invalid_form_data") from exc


def encodable(value: Any) -> bool:
    """False for strings with lone surrogates (legal in JSON escapes, not in UTF-8)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        return False
    return True


def token_from(request: Request, params: dict[str, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        token = header[7:].strip()
        if len(token) > 256:
            raise ApiError("invalid_auth")
        return token or None
    token = params.get("token")
    if token is None or token == "":
        return None
    if not isinstance(token, str) or not encodable(token) or len(token) > 256:
        raise ApiError("invalid_auth")
    return token
