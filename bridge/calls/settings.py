"""What the tracker (and the CDR backfill) need to know about this PBX."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrackerSettings:
    trunk_endpoints: frozenset[str] = frozenset({"novofon"})
    internal_pattern: str = r"^[1-9][0-9]{1,3}$"
    timezone: str = "Europe/Moscow"
    country_code: str = "7"
    default_did: str = ""
    max_call_age: float = 4 * 3600.0
