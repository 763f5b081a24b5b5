"""Novofon-style call records: exactly Novofon's event names, field names and value formats.

Field order follows Novofon's documentation (SPECS.md); every value is a string, as in the
form-encoded webhooks Novofon sends.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any


class Event(enum.StrEnum):
    START = "NOTIFY_START"
    INTERNAL = "NOTIFY_INTERNAL"
    ANSWER = "NOTIFY_ANSWER"
    END = "NOTIFY_END"
    OUT_START = "NOTIFY_OUT_START"
    OUT_END = "NOTIFY_OUT_END"
    RECORD = "NOTIFY_RECORD"
    IVR = "NOTIFY_IVR"  # the caller reached a voice menu (Novofon's cloud only); not an end
    SMS = "NOTIFY_SMS"  # an SMS to one of our numbers, from Novofon's /sms notification (ours)


FIELDS: dict[Event, tuple[str, ...]] = {
    Event.START: ("event", "call_start", "pbx_call_id", "caller_id", "called_did"),
    Event.INTERNAL: ("event", "call_start", "pbx_call_id", "caller_id", "called_did", "internal"),
    Event.ANSWER: ("event", "call_start", "pbx_call_id", "caller_id", "destination", "internal"),
    Event.END: (
        "event",
        "call_start",
        "pbx_call_id",
        "caller_id",
        "called_did",
        "internal",
        "duration",
        "disposition",
        "status_code",
        "is_recorded",
        "call_id_with_rec",
    ),
    Event.OUT_START: ("event", "call_start", "pbx_call_id", "internal", "destination"),
    Event.OUT_END: (
        "event",
        "call_start",
        "pbx_call_id",
        "caller_id",
        "destination",
        "internal",
        "duration",
        "disposition",
        "status_code",
        "is_recorded",
        "call_id_with_rec",
    ),
    Event.RECORD: ("event", "pbx_call_id", "call_id_with_rec"),
    Event.IVR: ("event", "call_start", "pbx_call_id", "caller_id", "called_did"),
    Event.SMS: (
        "event",
        "pbx_call_id",
        "virtual_phone_number",
        "notification_time",
        "contact_phone_number",
        "message",
    ),
}


class Disposition(enum.StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    CANCEL = "cancel"
    NO_ANSWER = "no answer"
    FAILED = "failed"
    UNALLOCATED = "unallocated number"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One Novofon notification.

    ``fields`` holds exactly the Novofon fields of ``event`` in Novofon's order. ``meta`` carries
    what is useful to our own sinks but is not a Novofon field (caller name, direction, the
    recording's file, ``reconstructed`` when the record was inferred after an AMI outage).
    """

    fields: dict[str, str]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def event(self) -> Event:
        return Event(self.fields["event"])

    @property
    def pbx_call_id(self) -> str:
        return self.fields["pbx_call_id"]

    @property
    def reconstructed(self) -> bool:
        return self.meta.get("reconstructed") == "1"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.fields)
        if self.meta:
            out["meta"] = dict(self.meta)
        return out


def make(event: Event, values: dict[str, str], meta: dict[str, str] | None = None) -> CallRecord:
    """Build a record with exactly the fields of ``event``; a missing field is a bug."""
    fields = {"event": event.value}
    for name in FIELDS[event][1:]:
        fields[name] = values[name]
    return CallRecord(fields, meta or {})


# The field that tells two records of one call and event apart (a call rings several employees).
_KEY_PART = {Event.INTERNAL: "internal", Event.ANSWER: "internal", Event.RECORD: "call_id_with_rec"}
_KEY_SAFE = re.compile(r"[A-Za-z0-9._:-]{1,120}")


def record_key(fields: dict[str, str]) -> str:
    """A record's identity: its call, its event and, where a call has several, which one. Equal for
    a record the tracker derives again after a restart; readable where safe, else a digest."""
    event = fields.get("event", "")
    part = _KEY_PART.get(Event(event)) if event in Event._value2member_map_ else None
    pieces = [fields.get("pbx_call_id", ""), event.removeprefix("NOTIFY_").lower()]
    if part:
        pieces.append(fields.get(part, ""))
    key = "-".join(pieces)
    if _KEY_SAFE.fullmatch(key):
        return key
    return hashlib.sha256("\0".join(pieces).encode()).hexdigest()[:32]


# What Novofon signs for each event (SPECS.md): the Signature header is
# base64(lowercase hex(HMAC-SHA1(api_secret, concatenated fields))).
SIGNED_FIELDS: dict[Event, tuple[str, ...]] = {
    Event.START: ("caller_id", "called_did", "call_start"),
    Event.INTERNAL: ("caller_id", "called_did", "call_start"),
    Event.ANSWER: ("caller_id", "destination", "call_start"),
    Event.END: ("caller_id", "called_did", "call_start"),
    Event.OUT_START: ("internal", "destination", "call_start"),
    Event.OUT_END: ("internal", "destination", "call_start"),
    Event.RECORD: ("pbx_call_id", "call_id_with_rec"),
    Event.IVR: ("caller_id", "called_did", "call_start"),
}


def is_signed(fields: dict[str, str]) -> bool:
    """Whether Novofon signs (and so a Novofon-compatible CRM expects) this event."""
    return fields.get("event") in {e.value for e in SIGNED_FIELDS}


def signature_string(fields: dict[str, str]) -> str:
    event = Event(fields["event"])
    return "".join(fields.get(name, "") for name in SIGNED_FIELDS[event])


def sign(fields: dict[str, str], secret: str) -> str:
    """Novofon's Signature header value for a notification with these fields."""
    digest = hmac.new(secret.encode(), signature_string(fields).encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(digest.encode()).decode()
