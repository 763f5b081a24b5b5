"""Reading a request's fields: GET query or POST form, as one flat dict (one value per key)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiMapping

from bridge.errors import BadRequest

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "application/octet-stream", "")


async def read_params(request: web.Request) -> dict[str, str]:
    """GET query or POST form (application/x-www-form-urlencoded or multipart), as one flat dict."""
    merged: dict[str, str] = {}
    sources: list[MultiMapping[Any]] = [request.query]
    if request.method == "POST":
        if request.content_type not in FORM_TYPES:
            raise BadRequest(415, "unsupported-media-type", "send form-encoded fields")
        sources.append(await request.post())
    for source in sources:
        for key, value in source.items():
            if not isinstance(value, str):
                raise BadRequest(400, "malformed", f"{key} must be a text field, not a file")
            if key in merged and merged[key] != value:
                raise BadRequest(400, "malformed", f"{key} is given twice with different values")
            merged[key] = value
    return merged
