"""Small checks the integrations' settings share (each raises SettingsError with its key)."""

from __future__ import annotations

import re

from bridge.errors import SettingsError


def url(key: str, value: str) -> None:
    """An http(s) URL. The error shows only the scheme and host of a wrong value: the rest of a
    URL can be a secret (a Bitrix24 webhook's code, a token in the query)."""
    if not re.match(r"^https?://[^/\s]+", value):
        start = re.match(r"[^/?#]*(//[^/?#]*)?", value)
        shown = re.sub(r"//[^@/]*@", "//***@", start.group(0) if start else "")[:40]
        rest = "/…" if start is None or len(value) > len(start.group(0)) else ""
        raise SettingsError(key, f"expected an http(s):// URL, got {shown + rest!r}")


def positive(obj: object, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise SettingsError(name, "expected a positive number")
