"""Novofon 2.0 notifications ("Настройки → Уведомления"): UIS-style fields, no NOTIFY_* and no
Signature, turned into the same records the tracker makes.

The admin creates one notification per type in the Novofon cabinet; each posts (GET or POST,
form or JSON) to ``/call?token=<novofon.notifications_token>&type=<type>`` with the parameters
listed in README.md. ``type`` is ours: Novofon's own type names are not confirmed (SPECS.md), so
the URL says which one it is. Every field is optional except the call's id and, per type, the
numbers that record needs; unknown fields are ignored.

| type       | Novofon 2.0 notification          | record                                 |
|------------|-----------------------------------|----------------------------------------|
| incoming   | incoming call to a virtual number | NOTIFY_START                           |
| waiting    | waiting for answer (a phone rings)| NOTIFY_INTERNAL                        |
| talk_start | talk start                        | NOTIFY_ANSWER                          |
| talk_end   | talk end                          | nothing (the call end says it all)     |
| call_end   | call end                          | NOTIFY_END / NOTIFY_OUT_END            |
| lost       | lost call                         | NOTIFY_END (missed)                    |
| outgoing   | outgoing call                     | NOTIFY_OUT_START                       |
| recorded   | recorded conversation             | NOTIFY_RECORD (file_link in meta)      |
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from bridge.calls.numbers import normalise
from bridge.calls.records import CallRecord, Event, make
from bridge.errors import BadRequest

TYPES = ("incoming", "waiting", "talk_start", "talk_end", "call_end", "lost", "outgoing", "recorded")
MAX_FIELD = 300
_ID = re.compile(r"[0-9A-Za-z_.:-]{1,100}")
_EXT = re.compile(r"[0-9]{1,16}")
_URL = re.compile(r"https?://[^\s\x00-\x1f]{1,1000}")

# A call's first notification time, remembered so that every record of it carries the same
# call_start (Novofon v1's meaning): (pbx_call_id, time seen now) -> the call's start.
CallStart = Callable[[str, str], str]


def is_v2(data: Mapping[str, str]) -> bool:
    """A 2.0 notification (as opposed to a v1 NOTIFY_* event)."""
    return "event" not in data and ("type" in data or "call_session_id" in data)


def _field(data: Mapping[str, str], name: str) -> str:
    value = data.get(name, "").strip()
    if len(value) > MAX_FIELD or not value.isprintable():
        raise BadRequest(400, "bad-field", f"{name} is too long or has control characters")
    return value


def _time(value: str, tz: ZoneInfo) -> str:
    """notification_time as "YYYY-MM-DD HH:MM:SS" in the PBX's zone (2.0 sends microseconds;
    an ISO time with an offset is converted)."""
    if not value:
        return datetime.now(tz).strftime("%Y-%m-%d %H:%M:%S")
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "T", 1))
    except ValueError:
        raise BadRequest(400, "bad-field", "notification_time is not a date and time") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(tz)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def _seconds(data: Mapping[str, str], name: str) -> str:
    value = _field(data, name) or "0"
    try:
        return str(max(0, round(float(value))))
    except ValueError:
        raise BadRequest(400, "bad-field", f"{name} must be a number of seconds") from None


def _number(data: Mapping[str, str], name: str, country: str) -> str:
    value = normalise(_field(data, name), country)
    if value and not value.isascii():
        raise BadRequest(400, "bad-field", f"{name} is not a phone number")
    return value


def _employee(data: Mapping[str, str]) -> str:
    """The employee's extension when Novofon gives one, else its employee id (digits)."""
    for name in ("extension_phone_number", "employee_id"):
        value = _field(data, name)
        if value and _EXT.fullmatch(value):
            return value
    return ""


def notification(
    data: Mapping[str, str], tz: ZoneInfo, country: str, call_start: CallStart
) -> tuple[str, list[CallRecord]]:
    """Validate a 2.0 notification; return (dedupe key, records) — no record for ``talk_end``."""
    kind = _field(data, "type")
    if kind not in TYPES:
        raise BadRequest(400, "unknown-type", f"type must be one of {', '.join(TYPES)} (from the URL)")
    session = _field(data, "call_session_id")
    if not _ID.fullmatch(session):
        raise BadRequest(400, "missing-field", "call_session_id is required (the call's id)")
    pbx_call_id = f"n2_{session}"
    seen = _time(_field(data, "notification_time"), tz)
    start = call_start(pbx_call_id, seen)
    client = _number(data, "contact_phone_number", country)
    did = _number(data, "virtual_phone_number", country)
    employee = _employee(data)
    outbound = kind == "outgoing" or _field(data, "direction") in ("out", "outgoing")
    meta: dict[str, str] = {"source": "novofon-cloud-2.0", "direction": "out" if outbound else "in"}
    if name := _field(data, "employee_full_name"):
        meta["employee_name"] = name
    if name := _field(data, "contact_full_name"):
        meta["caller_name"] = name
    base = {"call_start": start, "pbx_call_id": pbx_call_id}
    records: list[CallRecord] = []
    if kind == "incoming":
        records.append(make(Event.START, {**base, "caller_id": client, "called_did": did}, meta))
    elif kind == "waiting":
        records.append(
            make(Event.INTERNAL, {**base, "caller_id": client, "called_did": did, "internal": employee}, meta)
        )
    elif kind == "talk_start":
        answered_by = employee or client
        records.append(
            make(
                Event.ANSWER,
                {**base, "caller_id": client, "destination": answered_by, "internal": employee},
                meta,
            )
        )
    elif kind == "outgoing":
        records.append(make(Event.OUT_START, {**base, "internal": employee, "destination": client}, meta))
    elif kind in ("call_end", "lost"):
        records.append(_end(data, kind, base, client, did, employee, outbound, meta))
    elif kind == "recorded":
        link = _field(data, "file_link")
        if link and not _URL.fullmatch(link):
            raise BadRequest(400, "bad-field", "file_link is not an http(s) URL")
        rec_id = hashlib.sha256(f"{session}:{link}".encode()).hexdigest()[:24]
        records.append(
            make(
                Event.RECORD,
                {"pbx_call_id": pbx_call_id, "call_id_with_rec": rec_id},
                {**meta, "recording_url": link},
            )
        )
    return f"novofon2:{session}:{kind}:{employee}:{_field(data, 'file_link')}", records


def _end(
    data: Mapping[str, str],
    kind: str,
    base: dict[str, str],
    client: str,
    did: str,
    employee: str,
    outbound: bool,
    meta: dict[str, str],
) -> CallRecord:
    talk = _seconds(data, "talk_time_duration")
    # Answered is never reported as missed: only a call nobody talked on is "no answer".
    lost = kind == "lost" or _field(data, "is_lost").lower() in ("true", "1", "yes") or talk == "0"
    disposition = "no answer" if lost else "answered"
    values = {
        **base,
        "internal": employee,
        "duration": "0" if lost else talk,
        "disposition": disposition,
        "status_code": "16" if not lost else "19",
        "is_recorded": "1" if _field(data, "file_link") else "0",
        "call_id_with_rec": "",
    }
    if outbound:
        return make(Event.OUT_END, {**values, "caller_id": did, "destination": client}, meta)
    return make(Event.END, {**values, "caller_id": client, "called_did": did}, meta)
