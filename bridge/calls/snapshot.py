"""What the tracker must remember about open calls across a restart, as plain frozen values.

The tracker hands these out (``Tracker.take_changes``) and takes them back (``Tracker.restore``);
the pipeline commits them in the same transaction as the records they explain, so that after a
kill -9 the tracker knows exactly which records of each call were already committed: a START,
INTERNAL or ANSWER is never emitted twice, and a call keeps its direction, DID and employee.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

VERSION = 1


@dataclass(frozen=True)
class ChannelSnapshot:
    uniqueid: str
    name: str
    role: str
    extension: str = ""
    caller_num: str = ""
    exten: str = ""
    recording: bool = False
    connected_num: str = ""
    answered: bool = False  # a forwarded trunk leg picked up, the caller not yet connected to it


@dataclass(frozen=True)
class CallSnapshot:
    linkedid: str
    started_at: float
    last_seen: float
    call_start: str
    direction: str
    caller_id: str = ""
    caller_name: str = ""
    called_did: str = ""
    destination: str = ""
    internal: str = ""
    root_internal: str = ""
    answered_at: float | None = None
    rung: tuple[str, ...] = ()
    dial_results: tuple[str, ...] = ()
    outer_results: tuple[str, ...] = ()
    caller_hung_up: bool = False
    requests_seen: bool = False
    recorded: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (Uniqueid, the file MixMonitor writes) per recorded channel
    aliases: tuple[str, ...] = ()
    reconstructed: bool = False
    trunk: str = ""  # uniqueid of the trunk channel, if the call has one
    members: tuple[str, ...] = ()  # Uniqueid of every channel the call ever had
    channels: tuple[ChannelSnapshot, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        """Every id that names this call in Asterisk: its Linkedids and its channels' Uniqueids."""
        return (self.linkedid, *self.aliases, *self.members)

    def to_json(self) -> str:
        data: dict[str, Any] = {"v": VERSION}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "channels":
                value = [c.__dict__ for c in value]
            elif isinstance(value, tuple):
                value = list(value)
            data[name] = value
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CallSnapshot:
        data = json.loads(text)
        if data.pop("v", None) != VERSION:
            raise ValueError("unknown snapshot version")
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        values["channels"] = tuple(ChannelSnapshot(**c) for c in values.get("channels", ()))
        values["files"] = tuple((str(u), str(f)) for u, f in values.get("files", ()))
        for name in ("rung", "dial_results", "outer_results", "recorded", "aliases", "members"):
            values[name] = tuple(values.get(name, ()))
        return cls(**values)


@dataclass(frozen=True)
class EndedCall:
    """A call the tracker let go of: its open-call snapshot is deleted; if it was reported, its ids
    are remembered so that a CDR backfill never reports it again."""

    linkedid: str
    ids: tuple[str, ...]
    reported: bool


@dataclass(frozen=True)
class Changes:
    saved: tuple[CallSnapshot, ...] = ()
    ended: tuple[EndedCall, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.saved or self.ended)


@dataclass(frozen=True)
class EndFacts:
    """What is known about how a call ended while nobody listened (CDR, the recording's file)."""

    ended_at: float | None = None
    answered_at: float | None = None
    answered_by: str = ""  # extension that answered (last, after a transfer), when the CDR names one
    rung: tuple[str, ...] = ()  # extensions the CDR shows were rung
    disposition: str = ""  # Novofon disposition the CDR implies for an unanswered call
    source: str = ""  # "cdr", "recording" or "" (the last event seen)
    forwarded_to: str = ""  # the outside number that answered an inbound call forwarded through the trunk
