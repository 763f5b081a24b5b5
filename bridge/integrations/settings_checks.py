"""Small checks the integrations' settings share (each raises SettingsError with its key)."""

from __future__ import annotations

import re

from bridge.errors import SettingsError


def url(key: str, value: str) -> None:
    if not re.match(r"^https?://[^/\s]+", value):
        raise SettingsError(key, f"expected an http(s):// URL, got {value[:40]!r}")


def positive(obj: object, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise SettingsError(name, "expected a positive number")
