"""Reading a request's fields: GET query or POST form, as one flat dict (one value per key)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict, MultiMapping

from bridge.errors import BadRequest

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "application/octet-stream", "")


def _decoded(raw: str, charset: str) -> MultiDict[str]:
    """``a=%CF%F0`` read as ``charset`` (strict: bytes that are not text there are refused)."""
    return MultiDict(parse_qsl(raw, keep_blank_values=True, encoding=charset, errors="strict"))


async def _json_fields(request: web.Request) -> MultiDict[str]:
    """A flat JSON object (Novofon 2.0 can POST its parameters as JSON): scalars only, as text."""
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest(400, "malformed", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "malformed", "expected a JSON object of fields")
    out: MultiDict[str] = MultiDict()
    for key, value in body.items():
        if isinstance(value, (dict, list)):
            raise BadRequest(400, "malformed", f"{str(key)[:40]} must be a plain value")
        out[str(key)] = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return out


async def read_params(
    request: web.Request, charset: str | None = None, json_ok: bool = False
) -> dict[str, str]:
    """GET query or POST form (application/x-www-form-urlencoded or multipart), as one flat dict.

    ``charset``: the sender percent-encodes text in this charset, not UTF-8 (SMSC's callbacks are
    windows-1251 unless asked otherwise); a charset the body itself declares wins for the body.
    """
    merged: dict[str, str] = {}
    sources: list[MultiMapping[Any]] = [
        request.query if charset is None else _decoded(request.rel_url.raw_query_string, charset)
    ]
    if request.method == "POST" and json_ok and request.content_type == "application/json":
        sources.append(await _json_fields(request))
    elif request.method == "POST":
        if request.content_type not in FORM_TYPES:
            raise BadRequest(415, "unsupported-media-type", "send form-encoded fields")
        if charset is not None and request.content_type == "application/x-www-form-urlencoded":
            body_charset = request.charset or charset
            sources.append(_decoded((await request.read()).decode(body_charset), body_charset))
        else:
            sources.append(await request.post())
    for source in sources:
        for key, value in source.items():
            if not isinstance(value, str):
                raise BadRequest(400, "malformed", f"{key} must be a text field, not a file")
            if key in merged and merged[key] != value:
                raise BadRequest(400, "malformed", f"{key} is given twice with different values")
            merged[key] = value
    return merged
